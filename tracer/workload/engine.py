"""vLLM's `LLM` in this process as a workload: the Qwen3-VL chat round loop with random images."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from ..errors import UsageError
from . import DrainStep, encoder_cache_audit, encoder_cache_reset
from .engine_errors import EngineStartError, one_line, rejected_arguments
from .config import WorkloadConfig
from .requests import make_requests, single_token_words

# In-process engine core (so one tracer sees it all), no hub; a 1 GiB KV cache on CPU hosts.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "VLLM_CPU_KVCACHE_SPACE": "1"}

# (step, attribute path from the LLM object): vLLM's public cache resets, in drain order.
CACHE_RESETS = (("mm_cache", "reset_mm_cache"), ("prefix_cache", "reset_prefix_cache"),
                ("encoder_cache", "llm_engine.reset_encoder_cache"))


def check_engine_args(engine_args: dict) -> None:
    """Every key must be a field of vLLM's EngineArgs (what `vllm.LLM` accepts as keywords)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    unknown = sorted(set(engine_args) - {f.name for f in dataclasses.fields(EngineArgs)})
    if unknown:
        raise UsageError(f"unknown --engine-arg {', '.join(unknown)}: not a vllm EngineArgs field")


def build_engine(model_path: str, engine_args: dict):
    """An in-process `vllm.LLM`. An error vLLM raises while turning the arguments into its config is a UsageError;
    any other failure to start is an EngineStartError that says what failed and where."""
    from vllm import LLM

    try:
        return LLM(model=model_path, **engine_args)
    except (TypeError, ValueError) as exc:
        if not rejected_arguments(exc):
            raise EngineStartError(exc) from exc
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4] if line.strip())
        raise UsageError(f"vLLM rejected the engine arguments: {one_line(exc)}"
                         + (f" ({detail})" if detail else "")) from exc
    except Exception as exc:  # noqa: BLE001 - any other failure to start is reported the same way
        raise EngineStartError(exc) from exc


def sampling_params(config: WorkloadConfig, detokenize: bool):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=config.max_tokens, temperature=0.0, ignore_eos=True, detokenize=detokenize)


def run_round(llm, conversations: list[list[dict]], params) -> int:
    """Run one batch; every request must finish with tokens. Returns the number of generated tokens."""
    outputs = llm.chat(conversations, params, use_tqdm=False)
    if len(outputs) != len(conversations):
        raise RuntimeError(f"engine returned {len(outputs)} outputs for {len(conversations)} requests")
    tokens = 0
    for out in outputs:
        if not out.finished or not out.outputs or not out.outputs[0].token_ids:
            raise RuntimeError(f"request {out.request_id} did not finish with tokens")
        tokens += len(out.outputs[0].token_ids)
    return tokens


def _resolve(obj, path: str):
    """`obj.a.b` for "a.b", or None when an attribute is missing."""
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


class OncePerMessage(logging.Filter):
    """Let each log message through once: the CPU worker repeats the same warning at every step."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def quiet_repeated_logs() -> None:
    once = OncePerMessage()
    for handler in logging.getLogger("vllm").handlers:
        handler.addFilter(once)


class InProcessEngine:
    """`vllm.LLM` built in this process (engine core included), running seeded chat rounds."""

    def __init__(self, config: WorkloadConfig, on_start: Callable[[str], None] | None = None):
        self.config, self.on_start = config, on_start
        self.llm = self.params = None
        self.words: list[str] = []

    def start(self) -> dict:
        """Resolve the model, check the engine arguments and start vLLM in-process."""
        from .models import resolve_model

        for key, value in ENGINE_ENV.items():
            os.environ.setdefault(key, value)
        try:
            spec = resolve_model(self.config.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        from .releases import installed_release_args

        auto = {k: v for k, v in installed_release_args().items() if k not in self.config.engine_args}
        engine_args = {**spec.default_engine_args, **{k: value for k, (value, _) in auto.items()},
                       **self.config.engine_args}
        check_engine_args(engine_args)
        if self.on_start:
            self.on_start(spec.model)
        start = time.perf_counter()
        self.llm = build_engine(spec.model, engine_args)
        quiet_repeated_logs()
        self.params = sampling_params(self.config, spec.detokenize)
        self.words = single_token_words(self.llm.get_tokenizer())
        return {"model_path": spec.model, "engine_args": engine_args,
                "engine_load_seconds": round(time.perf_counter() - start, 3),
                "engine": "in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)",
                "engine_notes": [why for _, why in auto.values()]}

    def round(self, index: int) -> Callable[[], int]:
        conversations = make_requests(self.config, index, self.words)
        return lambda: run_round(self.llm, conversations, self.params)

    def drain_steps(self) -> list[DrainStep]:
        """vLLM's public resets; where one is missing, a substitute for the releases that lack it. The
        encoder-cache step first records what the cache holds that vLLM no longer tracks (its audit)."""
        steps = []
        for name, path in CACHE_RESETS:
            call, substitute = _resolve(self.llm, path), None
            if call is None and name == encoder_cache_reset.STEP:
                call = self._encoder_cache_substitute()
                substitute = encoder_cache_reset.describe() if call else None
            if call is None:
                continue
            audit = (lambda: encoder_cache_audit.audit(self.llm)) if name == encoder_cache_reset.STEP else None
            steps.append(DrainStep(name, call, substitute=substitute, audit=audit))
        return steps

    def missing_drain_steps(self) -> list[str]:
        have = {step.name for step in self.drain_steps()}
        return [name for name, _ in CACHE_RESETS if name not in have]

    def _encoder_cache_substitute(self):
        import vllm

        return encoder_cache_reset.substitute_reset(self.llm, getattr(vllm, "__version__", None))

    def roots(self) -> dict[str, object]:
        return {"llm": self.llm}

    def stop(self) -> None:
        self.llm = None
