"""Which vLLM component a stack belongs to: built-in rules, user code first, and rules files (handmade stacks)."""

from __future__ import annotations

import json

import pytest

from tracer.analysis.components import NATIVE_KERNELS, NO_PYTHON, USER_CODE, classify_component, load_rules
from tracer.analysis.stacks import Frame

SITE = "/venv/lib/python3.11/site-packages"


def f(function: str, file: str, line: int = 1) -> Frame:
    return Frame(function, file if file.startswith("/") or file.startswith("<") else f"{SITE}/{file}", line)


ENGINE_OUTER = (f("step", "vllm/v1/engine/core.py"), f("generate", "vllm/entrypoints/llm.py"))


@pytest.mark.parametrize("inner, component", [
    ((f("get_and_update_item", "vllm/multimodal/cache/processor.py"),), "multimodal processor cache"),
    ((f("get_and_update_features", "vllm/multimodal/cache/lru.py"),), "mm receiver cache"),
    ((f("execute_mm_encoder", "vllm/v1/worker/gpu/mm/encoder_runner.py"),), "encoder cache"),
    ((f("allocate", "vllm/v1/core/encoder_cache_manager.py"),), "encoder cache bookkeeping"),
    ((f("cache_full_blocks", "vllm/v1/core/block_pool.py"),), "prefix cache"),
    ((f("initialize_kv_cache", "vllm/v1/worker/gpu_model_runner.py"),), "KV cache"),
    ((f("add_request", "vllm/v1/core/sched/scheduler.py"),), "per-request state"),
    ((f("forward", "vllm/v1/sample/sampler.py"),), "sampler"),
    ((f("embed_multimodal", "vllm/model_executor/models/qwen3_vl.py"),), "vision encoder"),
    ((f("patchify", "transformers/models/qwen2_vl/image_processing_qwen2_vl.py"),), "HF image processing"),
    ((f("forward", "vllm/model_executor/layers/linear.py"),), "model forward"),
    ((f("something", "vllm/utils/misc.py"),), "vLLM engine"),
])
def test_builtin_rules(inner, component):
    assert classify_component(inner + ENGINE_OUTER) == component


def test_a_cache_wins_over_the_code_that_computed_the_value():
    stack = (f("patchify", "transformers/models/qwen2_vl/image_processing_qwen2_vl.py"),
             f("get_and_update_item", "vllm/multimodal/cache/processor.py")) + ENGINE_OUTER
    assert classify_component(stack) == "multimodal processor cache"


def test_user_code_that_calls_a_library_owns_what_the_library_allocates():
    stack = (f("patchify", "transformers/models/qwen2_vl/image_processing_qwen2_vl.py"),
             f("keep_inputs", "/home/me/my_plugin.py"),) + ENGINE_OUTER
    assert classify_component(stack) == USER_CODE


def test_user_code_called_by_vllm_is_still_user_code_when_innermost():
    stack = (f("remember", "/home/me/patch.py"),) + ENGINE_OUTER
    assert classify_component(stack) == USER_CODE


def test_native_kernel_caches_and_native_threads():
    assert classify_component((f("dnnl::impl::primitive_cache_t::get", "<native>"),) + ENGINE_OUTER) == NATIVE_KERNELS
    assert classify_component(()) == NO_PYTHON


def test_unknown_library_is_named_by_its_package():
    assert classify_component((f("compress", "zstandard/__init__.py"),)) == "zstandard"


def test_rules_file_comes_first(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"component": "my tokenizer cache", "file": r"vllm/transformers_utils/",
                                  "function": "^get_cached"}]))
    stack = (f("get_cached_tokenizer", "vllm/transformers_utils/tokenizer.py"),) + ENGINE_OUTER
    assert classify_component(stack) == "vLLM engine"
    assert classify_component(stack, load_rules(rules)) == "my tokenizer cache"


@pytest.mark.parametrize("content", ["{not json", '[{"file": "x"}]', '[{"component": "c", "file": "("}]'])
def test_bad_rules_files_are_refused(tmp_path, content):
    rules = tmp_path / "rules.json"
    rules.write_text(content)
    with pytest.raises(ValueError, match="bad rules file"):
        load_rules(rules)


def test_windows_paths_are_matched_like_posix_ones(tmp_path):
    win = "C:\\py\\Lib\\site-packages\\"
    request = Frame("add_request", win + "vllm\\v1\\request.py", 1)
    plugin = Frame("keep", "C:\\src\\plugins\\mine.py", 1)
    assert classify_component((request, plugin)) == "per-request state"  # vLLM allocated, called by a plugin
    assert classify_component((Frame("f", win + "numpy\\core.py", 1), plugin)) == USER_CODE
    assert classify_component((Frame("f", win + "mylib\\core.py", 1),)) == "mylib"  # installed: not user code
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"component": "mine", "file": r"plugins/mine\.py$"}]))
    assert classify_component((request, plugin), load_rules(rules)) == "mine"


def test_user_code_without_vllm_on_the_stack():
    torch_frame = Frame("empty", f"{SITE}/torch/functional.py", 3)
    user = Frame("run", "/home/me/script.py", 9)
    assert classify_component((torch_frame, user)) == USER_CODE
    assert classify_component((torch_frame,)) == "torch"
    assert classify_component((Frame("malloc", "", 0),)) == "unknown"


def test_rules_with_only_a_file_or_only_a_function(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"component": "by function", "function": "^pack_pixels$"},
                                 {"component": "by file", "file": r"mylib/io\.py$"}]))
    loaded = load_rules(rules)
    assert classify_component((Frame("pack_pixels", f"{SITE}/anything/x.py", 1),), loaded) == "by function"
    assert classify_component((Frame("read", f"{SITE}/mylib/io.py", 1),), loaded) == "by file"
    assert classify_component((Frame("read", f"{SITE}/mylib/other.py", 1),), loaded) == "mylib"
