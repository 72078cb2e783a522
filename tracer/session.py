"""The traced process: warmup, drain, measured rounds with probes and tracers, written to a capture directory.

`tracer diff` runs this module in a child process (`python -m tracer.session`), so that an engine crash or
Ctrl-C still leaves the capture of the rounds done, and so each run gets its own memray Tracker.
Exit codes: 0 complete, 1 engine error (capture partial), 2 bad input, 130 interrupted (capture partial).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .capture import CaptureWriter
from .probes import device_name
from .recorder import Recorder, TracingOptions
from .engine_errors import EngineStartError, write_engine_log
from .errors import UsageError
from .workload import ENGINE_ENV, WorkloadConfig, drain, start_engine

def load_preload(path: str) -> None:
    """Import a user's Python file as a named module (its stem), so its globals can be named in holder chains."""
    file = Path(path)
    name = file.stem if file.stem.isidentifier() else "tracer_preload"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def versions() -> dict:
    out = {"tracer": __version__, "python": platform.python_version()}
    for name in ("vllm", "torch", "memray", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a version we cannot read is reported as missing
            out[name] = None
    return out


class Progress:
    """One line per round on stderr (a live bar on a terminal)."""

    def __init__(self, total: int):
        self.total, self.done, self.tty = total, 0, sys.stderr.isatty()

    def round(self, row: dict) -> None:
        self.done += 1
        width = 24
        bar = "#" * (width * self.done // self.total)
        gpu = f", gpu {row['gpu_allocated_bytes'] / 2**20:.1f} MiB" if "gpu_allocated_bytes" in row else ""
        text = (f"[tracer] [{bar:<{width}}] round {self.done}/{self.total} ({row['phase']}) "
                f"{row['seconds']:.2f} s, rss {row['rss_bytes'] / 2**20:.0f} MiB{gpu}")
        sys.stderr.write(("\r" + text + ("\n" if self.done == self.total else "")) if self.tty else text + "\n")
        sys.stderr.flush()


def log(message: str) -> None:
    print(f"[tracer] {message}", file=sys.stderr, flush=True)


def run_session(capture_dir: Path, options: dict) -> int:
    config = WorkloadConfig(**options["workload"])
    tracing = TracingOptions(**options["tracing"])
    writer = CaptureWriter(capture_dir, {"run": {**asdict(config), "preload": options.get("preload", []),
                                                 "tracing": asdict(tracing), "env": dict(ENGINE_ENV),
                                                 "command": options.get("command")}})
    progress = Progress(config.warmup + config.rounds)
    recorder = Recorder(writer, tracing, on_round=progress.round)
    shown = False  # the error was already printed
    try:
        config.validate()
        for file in options.get("preload", []):
            load_preload(file)
        engine = start_logged_engine(config, capture_dir)
        for note in engine.notes:
            log(note)
        writer.manifest["run"].update(versions=versions(), device=device_name(), gpu=recorder.gpu,
                                      model_path=engine.model, engine_args=engine.engine_args,
                                      engine_load_seconds=engine.load_seconds, engine_notes=engine.notes)
        writer.save_manifest()
        llm = engine.llm

        def one_round(index: int, phase: str) -> None:
            recorder.round(index, phase, engine.round(index))

        for index in range(config.warmup):
            one_round(index, "warmup")
        if tracing.drain:
            writer.event("drain", when="baseline", reset=drain(llm))
        first = config.warmup
        if options.get("screen"):
            if not screen_pass(writer, config, one_round, llm, options["thresholds"]):
                raise ScreenedClean()
            first += config.rounds
            progress.total += config.rounds
            writer.event("drain", when="baseline", reset=drain(llm))
        recorder.start()
        last = first + config.rounds - 1
        for index in range(first, last + 1):
            one_round(index, "measured")
            recorder.round_end(index, last=index == last)
        if tracing.drain:
            recorder.drained(drain(llm))
        recorder.stop()
        if options.get("holders", True):
            find_leak_holders(capture_dir, llm)
        status, error, code = "complete", None, 0
    except ScreenedClean:
        status, error, code = "complete", None, 0
    except UsageError as exc:
        status, error, code = "failed", str(exc), 2
    except KeyboardInterrupt:
        status, error, code = "partial", "interrupted (Ctrl-C)", 130
    except EngineStartError as exc:
        for line in exc.lines:
            log(line)
        status, error, code = "partial", exc.summary, 1
        shown = True
    except Exception as exc:  # noqa: BLE001 - an engine crash must still leave a usable capture
        traceback.print_exc()
        status, error, code = "partial", f"{type(exc).__name__}: {exc}".splitlines()[0], 1
    finally:
        recorder.stop()
    writer.finish(status, error)
    if error and code != 2 and not shown:  # bad input is printed once, by `tracer diff`
        log(f"error: {error}")
    return code


def start_logged_engine(config: WorkloadConfig, capture_dir: Path):
    """Start vLLM; when it fails, the whole traceback goes to capture/engine.log and the error says what
    failed and where."""
    try:
        return start_engine(config, on_start=lambda model: log(f"starting vLLM on {model} ..."))
    except UsageError as exc:
        if exc.__cause__ is not None:
            write_engine_log(capture_dir / "engine.log", exc.__cause__)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
        raise EngineStartError(exc, write_engine_log(capture_dir / "engine.log", exc)) from exc


class ScreenedClean(Exception):
    """The screening pass saw nothing grow: the traced pass is skipped."""


def screen_pass(writer: CaptureWriter, config: WorkloadConfig, one_round, llm, thresholds: dict) -> bool:
    """Untraced rounds with counters only, then a drain; True when a counter grows like a leak."""
    from .probes import read_counters
    from .screen import screen
    from .verdicts import Thresholds

    baseline = writer.event("screen_mark", name="baseline", **read_counters())
    rows = []
    for index in range(config.warmup, config.warmup + config.rounds):
        one_round(index, "screen")
        rows.append(read_counters())
    drain(llm)
    drained = writer.event("screen_mark", name="drained", **read_counters())
    suspect, reasons = screen(baseline, rows, drained, Thresholds(**thresholds))
    writer.event("screen", suspect=suspect, reasons=reasons)
    log(("growth seen, tracing: " if suspect else "nothing grows, no traced pass: ") + "; ".join(reasons))
    return suspect


def find_leak_holders(capture_dir: Path, llm) -> None:
    """Name who holds each leak while the objects still exist; a failure here costs only the holder chains."""
    from .holders import record_holders

    start = time.perf_counter()
    try:
        holders = record_holders(capture_dir, {"llm": llm})
    except Exception as exc:  # noqa: BLE001 - the capture is complete without them
        log(f"holder search failed: {type(exc).__name__}: {exc}")
        return
    if holders:
        log(f"holders of {len(holders)} leak(s) found in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracer.session")
    parser.add_argument("capture_dir", type=Path)
    parser.add_argument("--options", required=True, help="JSON: {workload: {...}, tracing: {...}, preload: [...]}")
    args = parser.parse_args(argv)
    return run_session(args.capture_dir, json.loads(args.options))


if __name__ == "__main__":
    sys.exit(main())
