"""The workload's own garbage collections during the measured rounds, counted through `gc.callbacks`.

Under vLLM's frozen GC heap full collections are rare; when one runs during the rounds it frees reference-cycle
garbage, which makes a cycle's growth look smaller or sawtoothed. The count goes into the capture so the report
can say so.
"""

from __future__ import annotations

import gc


class CollectionCounter:
    """Collections and collected objects per generation while registered (a context manager)."""

    def __init__(self):
        self.collections = [0, 0, 0]
        self.collected = [0, 0, 0]

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "stop":
            generation = info["generation"]
            self.collections[generation] += 1
            self.collected[generation] += info["collected"]

    def __enter__(self) -> CollectionCounter:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)

    def as_event(self) -> dict:
        return {"collections": list(self.collections), "collected": list(self.collected),
                "frozen_objects": gc.get_freeze_count()}
