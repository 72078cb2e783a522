"""Rounds of any Python callable under tracer, in this process: what the pytest plugin runs, usable without pytest.

`run_callable_rounds(fn, directory, ...)`: `warmup` untraced rounds, the drain (an optional callable, then a
garbage collection), the baseline, `rounds` measured rounds traced by memray (and torch's memory history with
`gpu`), the staged final drain, then the analysis; the capture and the report files land in `directory`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .analysis.verdicts import Thresholds
from .capture import CaptureWriter, read_capture
from .errors import UsageError
from .record.driver import Driver, RunPlan, TracingOptions, run_rounds
from .record.probes import device_name
from .workload.callable import CallableWorkload

_active = False  # memray allows one Tracker per process; rounds inside rounds are refused


def run_callable_rounds(round_fn: Callable[[], object], directory: Path, warmup: int = 1, rounds: int = 8,
                        drain: Callable[[], object] | None = None, gpu: bool = False,
                        thresholds: Thresholds | None = None, command: str | None = None) -> dict:
    """Returns the report dict (schema tracer.report/1) written into `directory`."""
    global _active
    from .analysis.analyze import analyze
    from .output.report import write_report

    if _active:
        raise UsageError("tracer rounds are already running in this process (memray allows one Tracker at a time)")
    thresholds = thresholds or Thresholds()
    capture_dir = Path(directory) / "capture"
    writer = CaptureWriter(capture_dir, {"run": {"model": None, "warmup": warmup, "rounds": rounds,
                                                 "command": command, "preload": [], "engine_args": {},
                                                 "device": device_name(), "engine": "in this process"}})
    driver = Driver(CallableWorkload(round_fn, drain), writer, TracingOptions(host=True, gpu=gpu, drain=True),
                    RunPlan(warmup=warmup, rounds=rounds, holders=False, thresholds=asdict(thresholds)))
    status, error = "partial", None
    _active = True
    try:
        try:
            run_rounds(driver)
        except RuntimeError as exc:
            if "Tracker" in str(exc):
                raise UsageError(f"cannot trace: another memray Tracker is active in this process "
                                 f"(pytest-memray or memray run?): {exc}") from exc
            raise
        status = "complete"
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise
    finally:
        _active = False
        writer.finish(status, error)
    return write_report(analyze(read_capture(capture_dir), thresholds), Path(directory))
