"""The driver's measured rounds with `--rounds auto`: every round, planned or added, runs from the same call stack
(a handmade workload that records its caller frames; no engine, no tracing backends)."""

from __future__ import annotations

import traceback

from tracer.capture import CaptureWriter
from tracer.record import auto_rounds
from tracer.record.driver import Driver, RunPlan, TracingOptions

GROUP = {"id": "h1", "component": "user or plugin code", "owner": "keep plant.py:3", "bytes": 4096,
         "slope_bytes_per_round": 4096.0, "p_rising": 0.1}


class StackRecordingWorkload:
    """Each round records the driver's frames (function and line) it was called through."""

    def __init__(self):
        self.stacks: list[list[tuple[str, int]]] = []

    def round(self, index: int):
        def run():
            self.stacks.append([(f.name, f.lineno) for f in traceback.extract_stack()
                                if f.filename.endswith("tracer/record/driver.py")])
        return run

    def drain_steps(self):
        return []

    def missing_drain_steps(self):
        return []

    def roots(self):
        return {}


def test_added_rounds_run_from_the_same_call_stack_as_the_planned_ones(tmp_path, monkeypatch):
    """memray groups allocations by their whole stack and keeps a stack only while something of it survives: a
    second call site for the added rounds split each group, and a list reallocated after the check lost its
    first rounds (its series read flat for 8 rounds, then jumped)."""
    checks = []

    def undecided_until_8(capture_dir, thresholds, rules_file=None, role="main"):
        checks.append(len(workload.stacks))
        return [GROUP] if len(workload.stacks) < 8 else []

    monkeypatch.setattr(auto_rounds, "undecided_groups", undecided_until_8)
    workload = StackRecordingWorkload()
    writer = CaptureWriter(tmp_path, {"run": {}})
    tracing = TracingOptions(host=False, gpu=False, drain=False)
    Driver(workload, writer, tracing, RunPlan(warmup=0, rounds=2, holders=False, max_rounds=16)).run()
    assert checks == [2, 4, 8]  # doubled while undecided
    assert len(workload.stacks) == 8 and writer.manifest["run"]["rounds_added"] == 6
    assert all(stack == workload.stacks[0] for stack in workload.stacks), workload.stacks
