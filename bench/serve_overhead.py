"""Serve mode: round time of a real `vllm serve` untraced vs traced (memray in every server process), side by side
on one server; with `--whole`, also the whole `tracer diff --serve` command, untraced, traced and `--screen`.

    PYTHONPATH=envfix python bench/serve_overhead.py --rounds 6 --repeats 3 [--whole] [--whole-repeats 2]

One server is started as `tracer diff --serve` starts it (startup hook in every process); blocks of `--rounds`
fresh-image rounds (same sizes and batch, so the same work) alternate between untraced and traced (tracing started
and stopped through the agents, as the round driver does), `--repeats` times, the order swapped every repeat (so
drift in the machine's load falls on both alike), after one unmeasured round. The median round time of the traced
blocks is divided by the untraced median. Whole commands are interleaved the same way, `--whole-repeats` times each,
medians compared; each `--screen` command says whether its screen sent it on to the traced pass. Prints Markdown
tables and the load average before and after (the machine is shared: ratios are only meaningful on a quiet one).
Targets: traced rounds at most 1.4x the untraced ones; a clean `--screen` command at most 1.05x the untraced one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracer.capture import CaptureWriter  # noqa: E402
from tracer.record.driver import TracingOptions  # noqa: E402
from tracer.workload.config import WorkloadConfig  # noqa: E402
from tracer.workload.serve import ServedEngine  # noqa: E402


UNTRACED, TRACED = "untraced", "traced (memray: Python stacks, native ones in a CPU worker)"


def round_times(rounds: int, repeats: int, batch: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-serve-"))
    engine = ServedEngine(WorkloadConfig(batch=batch), tmp / "server.log")
    engine.start()
    times = {UNTRACED: [], TRACED: []}
    index = 0
    try:
        engine.round(index)()
        for rep in range(repeats):
            for name in (list(times) if rep % 2 == 0 else list(reversed(times))):
                backends = []
                if name == TRACED:
                    writer = CaptureWriter(tmp / f"{rep}", {"run": {}})
                    backends = engine.processes.backends(TracingOptions(gpu=False))
                    for backend in backends:
                        backend.start(writer, "")
                for _ in range(rounds):
                    index += 1
                    run = engine.round(index)
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
                for backend in backends:
                    backend.stop()
    finally:
        engine.stop()
    return times


COMMANDS = {"untraced (--no-host-trace --no-holders)": ["--no-host-trace", "--no-holders"], "traced": [],
            "--screen": ["--screen"]}


def whole_command(extra: list[str], rounds: int, warmup: int) -> tuple[float, dict | None]:
    """Seconds of one `tracer diff --serve` command, and its report's screen outcome."""
    out = Path(tempfile.mkdtemp(prefix="tracer-bench-serve-")) / "report"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tracer", "diff", "--serve", "--rounds", str(rounds), "--warmup",
                    str(warmup), "--out", str(out), *extra], check=True, capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "report.json").read_text()).get("screen")


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--whole", action="store_true", help="Also time whole `tracer diff --serve` commands.")
    parser.add_argument("--whole-repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2,
                        help="Warmup rounds of the whole commands (the CPU worker's C heap can keep a few MiB "
                             "from its second round, which a screen after one warmup round takes for growth).")
    args = parser.parse_args()
    print(f"before: {load()}\n")
    times = round_times(args.rounds, args.repeats, args.batch)
    base = statistics.median(times[UNTRACED])
    print("| mode | rounds | median round s | vs untraced |\n|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {len(values)} | {statistics.median(values):.3f} | "
              f"{statistics.median(values) / base:.2f}x |")
    if args.whole:
        seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
        screens = []
        for rep in range(args.whole_repeats):
            for name in (list(COMMANDS) if rep % 2 == 0 else list(reversed(COMMANDS))):
                value, screen = whole_command(COMMANDS[name], args.rounds, args.warmup)
                seconds[name].append(value)
                if name == "--screen":
                    screens.append("traced " + ", ".join(r for r, p in screen["processes"].items() if p["suspect"])
                                   if screen["suspect"] else "clean, not traced")
        plain = statistics.median(seconds["untraced (--no-host-trace --no-holders)"])
        print("\n| command | runs s | median s | vs untraced command |\n|---|---|---|---|")
        for name, values in seconds.items():
            print(f"| tracer diff --serve {name} | {', '.join(f'{v:.1f}' for v in values)} | "
                  f"{statistics.median(values):.1f} | {statistics.median(values) / plain:.2f}x |")
        print(f"\n--screen outcomes: {'; '.join(screens)}")
    print(f"\nafter: {load()}")


if __name__ == "__main__":
    main()
