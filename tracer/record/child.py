"""Running the traced session in a child process, from `tracer diff`."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..capture import ENGINE_LOG
from ..errors import UsageError

INTERRUPTED = 130


def check_vllm_installed() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise UsageError(f"vLLM is not installed for {sys.executable}: pip install 'tracer[cpu]' on a CPU host, "
                         "or 'vllm>=0.20' on a CUDA host")


def run_session_process(capture_dir: Path, options: dict, verbose: bool = False) -> int:
    """Run `python -m tracer.record.session` in its own process group; Ctrl-C asks it to stop after keeping the
    capture. vLLM's log goes to `capture/engine.log` (and, with `verbose`, to our stderr as it comes), so
    `--json` output stays clean. Returns the child's exit code (a negative signal number when it was killed)."""
    env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO" if verbose else "WARNING")}
    allocator = options.get("allocator")
    if allocator:  # the traced process runs under another C allocator
        env["LD_PRELOAD"] = " ".join(filter(None, [allocator["library"], env.get("LD_PRELOAD")]))
    command = [sys.executable, "-m", "tracer.record.session", str(capture_dir), "--options", json.dumps(options)]
    if not verbose:
        capture_dir.mkdir(parents=True, exist_ok=True)
        command += ["--log-file", str(capture_dir / ENGINE_LOG)]
    child = subprocess.Popen(command, stdout=sys.stderr, env=env, start_new_session=True)
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


def exit_code(child_code: int) -> int:
    """`tracer diff`'s exit code for a finished child: 0 done, 130 interrupted, 1 crashed or killed."""
    if child_code == 0:
        return 0
    return INTERRUPTED if child_code in (INTERRUPTED, -signal.SIGINT) else 1
