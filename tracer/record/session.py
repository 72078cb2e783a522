"""The traced process of `tracer diff`: the in-process vLLM workload under the round driver, into a capture.

`tracer diff` runs this module in a child process (`python -m tracer.record.session`), so that an engine crash or
Ctrl-C still leaves the capture of the rounds done, and so each run gets its own memray Tracker. With
`--log-file`, everything the process prints (vLLM's log, warnings, tracebacks) goes to that file and only tracer's
progress and messages reach the terminal.
Exit codes: 0 complete, 1 engine error (capture partial), 2 bad input, 130 interrupted (capture partial).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import traceback
from pathlib import Path

from .. import __version__
from ..capture import CaptureWriter
from ..errors import UsageError
from ..workload.config import WorkloadConfig
from ..workload.engine import ENGINE_ENV, InProcessEngine
from ..workload.engine_errors import EngineStartError
from ..workload.serve import SERVER_ENV
from .driver import Driver, RunPlan, ScreenedClean, TracingOptions, run_rounds
from .probes import device_name, malloc_in_use

_terminal = sys.stderr  # where tracer's own lines go; the log file takes the rest with --log-file


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
    """One line per round (a live bar on a terminal)."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def round(self, row: dict) -> None:
        self.done += 1
        self.total = max(self.total, self.done)  # rounds added by --rounds auto
        width = 24
        bar = "#" * (width * min(self.done, self.total) // self.total)
        gpu = f", gpu {row['gpu_allocated_bytes'] / 2**20:.1f} MiB" if row.get("gpu_allocated_bytes") is not None else ""
        text = (f"[tracer] [{bar:<{width}}] round {self.done}/{self.total} ({row['phase']}) "
                f"{row['seconds']:.2f} s, rss {row['rss_bytes'] / 2**20:.0f} MiB{gpu}")
        tty = _terminal.isatty()
        _terminal.write(("\r" + text + ("\n" if self.done >= self.total else "")) if tty else text + "\n")
        _terminal.flush()


def log(message: str) -> None:
    print(f"[tracer] {message}", file=_terminal, flush=True)


def send_output_to(log_file: Path) -> None:
    """Point this process's stdout and stderr (file descriptors too, for native code) at `log_file`; tracer's
    own lines keep the terminal through a duplicate of the original stderr."""
    global _terminal
    _terminal = os.fdopen(os.dup(2), "w", buffering=1)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def innermost_frames(exc: BaseException, count: int = 3) -> str:
    """`file:line in function` of the innermost frames of an exception, for a one-look error line."""
    frames = traceback.extract_tb(exc.__traceback__)[-count:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))


def run_session(capture_dir: Path, options: dict, log_file: Path | None = None) -> int:
    config = WorkloadConfig(**options["workload"])
    tracing = TracingOptions(**options["tracing"])
    # the malloc this process really calls, and the one --allocator asked to preload
    allocator = {**malloc_in_use(), "preloaded": (options.get("allocator") or {}).get("name")}
    writer = CaptureWriter(capture_dir, {"run": {**config.__dict__, "preload": options.get("preload", []),
                                                 "env": dict(ENGINE_ENV), "command": options.get("command"),
                                                 "allocator": allocator}})
    if log_file is not None:
        send_output_to(log_file)
    plan = RunPlan(warmup=config.warmup, rounds=config.rounds, screen=bool(options.get("screen")),
                   holders=options.get("holders", True), thresholds=options.get("thresholds", {}),
                   rules_file=options.get("rules"), max_rounds=options.get("max_rounds"))
    progress = Progress(config.warmup + config.rounds * (2 if plan.screen else 1))
    serve = options.get("serve")
    if serve:
        from ..workload.serve import ServedEngine

        preload = [{"file": f, "roles": serve.get("preload_in")} for f in options.get("preload", [])]
        workload = ServedEngine(config, capture_dir / "engine.log", port=serve.get("port"),
                                start_timeout=serve.get("start_timeout", 300.0), preload=preload,
                                on_start=lambda model: log(f"starting vllm serve on {model} ..."))
        writer.manifest["run"]["env"] = {k: os.environ.get(k, v) for k, v in SERVER_ENV.items()}
    else:
        workload = InProcessEngine(config, on_start=lambda model: log(f"starting vLLM on {model} ..."))
    shown = False  # the error's lines are out already
    try:
        config.validate()
        if not serve:
            for file in options.get("preload", []):
                load_preload(file)
        facts = workload.start()
        for note in facts.get("engine_notes", []):
            log(note)
        writer.manifest["run"].update(versions=versions(), device=device_name(), **facts)
        writer.save_manifest()
        run_rounds(Driver(workload, writer, tracing, plan, on_round=progress.round, log=log,
                          processes=workload.processes if serve else None))
        status, error, code = "complete", None, 0
    except ScreenedClean:
        status, error, code = "complete", None, 0
    except UsageError as exc:
        status, error, code = "failed", str(exc), 2
    except EngineStartError as exc:
        traceback.print_exc()  # into engine.log with --log-file
        for line in exc.lines + ([f"  full traceback: {log_file}"] if log_file else []):
            log(line)
        status, error, code, shown = "partial", exc.summary, 1, True
    except KeyboardInterrupt:
        status, error, code = "partial", "interrupted (Ctrl-C)", 130
    except Exception as exc:  # noqa: BLE001 - an engine crash must still leave a usable capture
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        status, error, code = "partial", f"{message} (at {innermost_frames(exc)})", 1
    finally:
        if serve:
            workload.stop()
    writer.finish(status, error)
    if error and code != 2 and not shown:  # bad input is printed once, by `tracer diff`
        log(f"error: {error}" + (f"; full traceback in {log_file}" if log_file and code == 1 else ""))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracer.record.session")
    parser.add_argument("capture_dir", type=Path)
    parser.add_argument("--options", required=True, help="JSON: {workload: {...}, tracing: {...}, preload: [...]}")
    parser.add_argument("--log-file", type=Path, help="Send everything but tracer's own lines here.")
    args = parser.parse_args(argv)
    return run_session(args.capture_dir, json.loads(args.options), args.log_file)


if __name__ == "__main__":
    sys.exit(main())
