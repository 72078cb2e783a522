"""What the round loop does: everything here is recorded in the report so a run can be reproduced."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

from ..errors import UsageError

IMAGE_MODES = ("fresh", "fixed")


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
