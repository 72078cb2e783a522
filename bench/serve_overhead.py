"""Serve mode: round time of a real `vllm serve` untraced vs traced (memray in every server process), side by side
on one server; with `--whole`, also the whole `tracer diff --serve` command, plain and `--screen`.

    PYTHONPATH=envfix python bench/serve_overhead.py --rounds 6 --repeats 3 [--whole]

One server is started as `tracer diff --serve` starts it (startup hook in every process); blocks of `--rounds`
fresh-image rounds alternate between untraced and traced (tracing started and stopped through the agents, as the
round driver does), `--repeats` times, after one unmeasured round. The median round time of the traced blocks is
divided by the untraced median. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
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


def round_times(rounds: int, repeats: int, batch: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-serve-"))
    engine = ServedEngine(WorkloadConfig(batch=batch), tmp / "server.log")
    engine.start()
    times = {"untraced": [], "traced (memray, python stacks)": []}
    index = 0
    try:
        engine.round(index)()
        for rep in range(repeats):
            for name in times:
                backends = []
                if name != "untraced":
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


def whole_command(extra: list[str], rounds: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="tracer-bench-serve-")) / "report"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tracer", "diff", "--serve", "--rounds", str(rounds), "--out", str(out),
                    *extra], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--whole", action="store_true", help="Also time whole `tracer diff --serve` commands.")
    args = parser.parse_args()
    times = round_times(args.rounds, args.repeats, args.batch)
    base = statistics.median(times["untraced"])
    print("| mode | median round s | vs untraced |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.median(values) / base:.2f}x |")
    if args.whole:
        plain = whole_command(["--no-host-trace", "--no-holders"], args.rounds)
        traced = whole_command([], args.rounds)
        screened = whole_command(["--screen"], args.rounds)
        print("\n| command | seconds | vs untraced command |\n|---|---|---|")
        for name, value in (("--no-host-trace (untraced)", plain), ("traced", traced), ("--screen", screened)):
            print(f"| tracer diff --serve {name} | {value:.1f} | {value / plain:.2f}x |")


if __name__ == "__main__":
    main()
