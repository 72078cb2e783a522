"""Which vLLM component a stack belongs to, from the file and function names on it (vLLM 0.25-0.33 layout),
extensible by a rules file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .stacks import Frame, owner_index, short_path

USER_CODE = "user or plugin code"
NATIVE_KERNELS = "oneDNN / native kernels"
NO_PYTHON = "native threads (no Python frames)"


@dataclass(frozen=True)
class Rule:
    component: str
    file: re.Pattern
    function: re.Pattern

    def matches(self, frame: Frame) -> bool:
        return bool(self.file.search(frame.file.replace("\\", "/")) and self.function.search(frame.function))


def _rule(component: str, file: str = "", function: str = "") -> Rule:
    return Rule(component, re.compile(file), re.compile(function))


# Ordered by priority: a component that *keeps* memory (a cache) wins over one that merely computed it.
# The kernel caches of CPU backends (JIT code per input shape) are seen only with native frames.
BUILTIN_RULES: tuple[Rule, ...] = (
    _rule(NATIVE_KERNELS, r"", r"^(dnnl::|Xbyak::|ideep::utils::computation_cache|at::native::cpublas::KernelCache)"),
    _rule("CUDA graph pool", r"vllm/compilation/cuda_graph\.py|vllm/.*cudagraph", r""),
    # the receiver cache first: its get_and_update_features also matches the processor cache's names
    _rule("mm receiver cache", r"vllm/multimodal/cache", r"ReceiverCache|get_and_update_features"),
    _rule("multimodal processor cache", r"vllm/multimodal/cache",
          r"MultiModalProcessorOnlyCache|SenderCache|get_and_update_item|processor_cache|put|get_and_update"),
    _rule("encoder cache", r"vllm/v1/worker/.*(encoder_cache|encoder_runner|model_runner)\.py",
          r"execute_mm_encoder|encoder_cache|EncoderCache"),
    _rule("encoder cache bookkeeping", r"vllm/v1/core/encoder_cache_manager\.py"),
    _rule("prefix cache", r"vllm/v1/core/(block_pool|kv_cache_utils)\.py"),
    _rule("KV cache", r"vllm/v1/(worker|core)/.*\.py", r"initialize_kv_cache|allocate_kv_cache|_allocate_kv"),
    _rule("per-request state", r"vllm/v1/(core/sched/scheduler|engine/output_processor|request)\.py"),
    # not vllm/compilation/decorators.py: its __call__ wraps every decorated model's forward, eager ones included
    _rule("torch.compile", r"vllm/compilation/(?!decorators\.py)|torch/_dynamo/|torch/_inductor/"),
    _rule("sampler", r"vllm/v1/sample/"),
    _rule("vision encoder", r"vllm/model_executor/models/qwen\d?_?\d?_?vl\.py|vllm/model_executor/models/.*vl\.py",
          r"embed_multimodal|_process_image_input|VisionTransformer|Vision"),
    _rule("HF image processing", r"vllm/multimodal/processing|transformers/.*(image_processing|processing_|image_utils)",
          r""),
    _rule("model forward", r"vllm/model_executor/"),
    _rule("vLLM engine", r"vllm/"),
)

_LIBRARY = re.compile(r"(site-packages|dist-packages)/|/lib/python3\.\d+/|^<frozen |^\?\?$|^$|"
                      r"(^|/)(vllm|torch|transformers|tokenizers|memray|PIL|numpy)/")


def load_rules(path: Path) -> tuple[Rule, ...]:
    """A user's rules file: JSON list of {"component", "file" (regex), "function" (regex)}; they come first."""
    try:
        data = json.loads(Path(path).read_text())
        return tuple(_rule(str(r["component"]), r.get("file", ""), r.get("function", "")) for r in data)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, re.error) as exc:
        raise ValueError(f"bad rules file {path}: {exc}") from exc


def is_user_code(frame: Frame) -> bool:
    """Python code outside installed libraries: the user's script, a --preload patch, a plugin in development."""
    path = frame.file.replace("\\", "/")
    return path.endswith(".py") and not _LIBRARY.search(path)


def classify_component(stack: tuple[Frame, ...], extra_rules: tuple[Rule, ...] = ()) -> str:
    if not stack:
        return NO_PYTHON
    for rule in extra_rules:
        if any(rule.matches(f) for f in stack):
            return rule.component
    user = next((i for i, f in enumerate(stack) if is_user_code(f)), None)
    vllm = next((i for i, f in enumerate(stack) if "vllm/" in f.file.replace("\\", "/")), None)
    if user is not None and (vllm is None or user < vllm):  # user code called the library that allocated
        return USER_CODE
    for rule in BUILTIN_RULES:
        if any(rule.matches(f) for f in stack):
            return rule.component
    owner = stack[owner_index(stack)]
    return short_path(owner.file).split("/")[0] or "unknown"
