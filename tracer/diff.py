"""`tracer diff`: run the traced session in a child process, then analyse its capture and write the report."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .analysis import analyze
from .capture import read_capture
from .report import write_report
from .verdicts import Thresholds
from .errors import UsageError

INTERRUPTED = 130


def run_id(model: str) -> str:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(model).name or model)[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def check_vllm_installed() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise UsageError(f"vLLM is not installed for {sys.executable}: pip install 'tracer[cpu]' on a CPU host, "
                         "or 'vllm>=0.20' on a CUDA host")


def run_session_process(capture_dir: Path, options: dict) -> int:
    """Run `python -m tracer.session` in its own process group; Ctrl-C asks it to stop after keeping the capture.

    The child's stdout (vLLM logs there) goes to our stderr, so `--json` output stays clean.
    """
    env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    child = subprocess.Popen([sys.executable, "-m", "tracer.session", str(capture_dir), "--options",
                              json.dumps(options)], stdout=sys.stderr, env=env, start_new_session=True)
    interrupts = 0

    def forward(signum, frame):
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            print("[tracer] interrupted: keeping the capture of the rounds done (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)
            child.send_signal(signal.SIGINT)
        else:
            child.kill()

    previous = signal.signal(signal.SIGINT, forward)
    try:
        while True:
            try:
                return child.wait()
            except InterruptedError:
                continue
    finally:
        signal.signal(signal.SIGINT, previous)


def run_diff(options: dict, out_dir: Path, thresholds: Thresholds, rules=(), exports=()) -> tuple[dict | None, int]:
    """Returns (report, exit code). Exit codes: 0 done, 1 engine error or killed (report partial),
    2 bad input, 130 interrupted (report partial)."""
    check_vllm_installed()
    capture_dir = out_dir / "capture"
    if capture_dir.exists() and any(capture_dir.iterdir()):
        raise UsageError(f"{out_dir} already holds a capture: choose another --out")
    code = run_session_process(capture_dir, options)
    capture = read_capture(capture_dir)
    if code == 2 or capture.manifest.get("status") == "failed":
        raise UsageError(capture.manifest.get("error") or "the traced session rejected its input")
    report = write_report(analyze(capture, thresholds, rules), out_dir, exports)
    if code == 0:
        return report, 0
    return report, INTERRUPTED if code in (INTERRUPTED, -signal.SIGINT) else 1
