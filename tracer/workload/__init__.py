"""Workloads: what the round driver runs. A workload starts, prepares and runs one round at a time, names the
steps that drain its caches, names the roots a holder search starts from, describes itself and stops.

Implementations: `engine.InProcessEngine` (vLLM's `LLM` in this process, the Qwen3-VL chat round loop) and
`callable.CallableWorkload` (any function, as the pytest plugin runs it). A new workload (an HTTP client of
`vllm serve`, say) is a class with these methods; `tracer.record.driver.run_rounds` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True)
class DrainStep:
    """One way of emptying a cache; the driver runs each separately and records what it released. `substitute`
    describes a step that stands in for a reset the installed library lacks (what it replaces, for which releases,
    how); the report lists it. `audit`, run just before the step, returns counts of what the cache holds that the
    reset would hide (recorded as the step's `found`), or None."""

    name: str
    run: Callable[[], object]
    substitute: dict | None = None
    audit: Callable[[], dict | None] | None = None


class Workload(Protocol):
    def start(self) -> dict:
        """Get ready (build the engine); returns facts for the run's manifest (model, engine args, load time)."""

    def round(self, index: int) -> Callable[[], object]:
        """Prepare round `index` (its requests) and return the call that runs it; the driver times that call.
        It may return the number of tokens generated."""

    def drain_steps(self) -> list[DrainStep]:
        """The cache resets this workload has, in order; the driver ends every drain with a garbage collection."""

    def missing_drain_steps(self) -> list[str]:
        """Cache resets this workload would use but the installed library lacks."""

    def roots(self) -> dict[str, object]:
        """Named objects a holder search starts from, besides every module's globals (e.g. {"llm": llm})."""

    def stop(self) -> None:
        """Release what `start` built."""
