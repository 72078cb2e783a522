"""A user's function as a workload: each round calls it once (the pytest plugin's rounds)."""

from __future__ import annotations

from typing import Callable

from . import DrainStep


class CallableWorkload:
    def __init__(self, round_fn: Callable[[], object], drain: Callable[[], object] | None = None):
        self.round_fn, self.drain = round_fn, drain

    def start(self) -> dict:
        return {}

    def round(self, index: int) -> Callable[[], object]:
        return self.round_fn

    def drain_steps(self) -> list[DrainStep]:
        if self.drain is None:
            return []
        return [DrainStep(getattr(self.drain, "__name__", "drain"), self.drain)]

    def missing_drain_steps(self) -> list[str]:
        return []

    def roots(self) -> dict[str, object]:
        return {}

    def stop(self) -> None:
        pass
