"""The Qwen3-VL round loop: seeded chat requests with random images, run on a real in-process vLLM engine."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import random
import re
from dataclasses import dataclass, field

from .errors import UsageError

# In-process engine core (so one tracker sees it all), no hub; a 1 GiB KV cache on CPU hosts.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "VLLM_CPU_KVCACHE_SPACE": "1"}

IMAGE_MODES = ("fresh", "fixed")
_WORDS = (
    "describe the picture what colour shape texture light shadow count objects where left right top bottom "
    "center corner noise pattern random pixel scene detail summarize compare explain list tell briefly"
).split()


@dataclass
class WorkloadConfig:
    """What the round loop does; everything in it is recorded in the report so a run can be reproduced."""

    model: str = "tiny"
    warmup: int = 1
    rounds: int = 8
    batch: int = 4
    images: str = "fresh"
    max_tokens: int = 16
    seed: int = 0
    engine_args: dict = field(default_factory=dict)
    image_size: str = "384x384"
    words: int = 24

    def image_shape(self, rng: random.Random) -> tuple[int, int]:
        """(width, height): the set size, or a new random one per image with `random`."""
        if self.image_size == "random":
            return rng.randrange(128, 449), rng.randrange(128, 449)
        w, h = self.image_size.lower().split("x")
        return int(w), int(h)

    def validate(self) -> None:
        if self.images not in IMAGE_MODES:
            raise UsageError(f"--images must be one of {', '.join(IMAGE_MODES)}, not {self.images!r}")
        for name in ("rounds", "batch", "max_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0:
            raise UsageError("--warmup must be 0 or more")
        if not (self.image_size == "random" or re.fullmatch(r"[1-9]\d{1,4}x[1-9]\d{1,4}", self.image_size.lower())):
            raise UsageError(f"--image-size must be WxH (e.g. 384x384) or random, not {self.image_size!r}")


def parse_engine_args(items: tuple[str, ...] | list[str]) -> dict:
    """`KEY=VALUE` pairs; a VALUE that parses as JSON is taken as JSON (numbers, booleans, objects)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UsageError(f"bad --engine-arg {item!r}: expected KEY=VALUE, e.g. max_model_len=8192")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def single_token_words(tokenizer, limit: int = 512) -> list[str]:
    """Words that the tokenizer encodes (with a leading space) as exactly one token.

    Random text made of them has the same token count every round, so prompts keep their shapes and CPU
    kernel caches (oneDNN, brgemm) that key on shapes stop growing after warmup; content stays fresh.
    """
    candidates = sorted(t[1:] for t in tokenizer.get_vocab() if t.startswith("\u0120") and t[1:].isalpha()
                        and t[1:].islower() and len(t) >= 4)[:limit * 2]
    words = [w for w in candidates if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1][:limit]
    return words if len(words) >= 32 else list(_WORDS)


def make_requests(config: WorkloadConfig, round_index: int, words: list[str] | None = None) -> list[list[dict]]:
    """A batch of chat conversations, each one random image plus random text. Fixed mode repeats round 0's."""
    from PIL import Image
    import numpy as np

    key = 0 if config.images == "fixed" else round_index
    rng = random.Random(config.seed * 1_000_003 + key)
    words = words or list(_WORDS)
    conversations = []
    for _ in range(config.batch):
        w, h = config.image_shape(rng)
        pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (h, w, 3), dtype=np.uint8)
        text = "".join(" " + rng.choice(words) for _ in range(config.words))
        conversations.append([{
            "role": "user",
            "content": [{"type": "image_pil", "image_pil": Image.fromarray(pixels, "RGB")},
                        {"type": "text", "text": text}],
        }])
    return conversations


def check_engine_args(engine_args: dict) -> None:
    """Every key must be a field of vLLM's EngineArgs (what `vllm.LLM` accepts as keywords)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    unknown = sorted(set(engine_args) - {f.name for f in dataclasses.fields(EngineArgs)})
    if unknown:
        raise UsageError(f"unknown --engine-arg {', '.join(unknown)}: not a vllm EngineArgs field")


def build_engine(model_path: str, engine_args: dict):
    """An in-process `vllm.LLM`; an error vLLM raises while turning the arguments into its config becomes a
    UsageError, any other error of the start propagates as raised."""
    from vllm import LLM

    from .engine_errors import one_line, rejected_arguments

    try:
        return LLM(model=model_path, **engine_args)
    except (TypeError, ValueError) as exc:
        if not rejected_arguments(exc):
            raise
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4] if line.strip())
        raise UsageError(f"vLLM rejected the engine arguments: {one_line(exc)}"
                         + (f" ({detail})" if detail else "")) from exc


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


def drain(llm) -> list[str]:
    """Empty vLLM's caches through its public APIs and collect garbage; returns what was reset.

    What a drain releases was a cache; what survives it is held by something else.
    """
    done = []
    for name, call in (
        ("mm_cache", lambda: llm.reset_mm_cache()),
        ("prefix_cache", lambda: llm.reset_prefix_cache()),
        ("encoder_cache", lambda: llm.llm_engine.reset_encoder_cache()),
    ):
        try:
            call()
            done.append(name)
        except (AttributeError, NotImplementedError):
            pass
    gc.collect()
    return done


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


@dataclass
class Engine:
    """A started engine with what a round needs: sampling parameters and the words random texts are made of."""

    config: WorkloadConfig
    llm: object
    params: object
    words: list[str]
    model: str
    engine_args: dict
    load_seconds: float
    notes: list[str] = field(default_factory=list)  # engine arguments set automatically for this release, and why

    def round(self, index: int):
        """A callable that runs round `index` (its requests are made now, outside the timed part)."""
        conversations = make_requests(self.config, index, self.words)
        return lambda: run_round(self.llm, conversations, self.params)


def start_engine(config: WorkloadConfig, on_start=None) -> Engine:
    """Resolve the model, check the engine arguments and start vLLM in-process."""
    from .models import resolve_model

    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        spec = resolve_model(config.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    from .releases import installed_release_args

    auto = {k: v for k, v in installed_release_args().items() if k not in config.engine_args}
    notes = [why for _, why in auto.values()]
    engine_args = {**spec.default_engine_args, **{k: value for k, (value, _) in auto.items()}, **config.engine_args}
    check_engine_args(engine_args)
    if on_start:
        on_start(spec.model)
    start = time.perf_counter()
    llm = build_engine(spec.model, engine_args)
    quiet_repeated_logs()
    return Engine(config, llm, sampling_params(config, spec.detokenize), single_token_words(llm.get_tokenizer()),
                  spec.model, engine_args, round(time.perf_counter() - start, 3), notes)
