"""Round time untraced vs each tracing mode, measured side by side on one engine in one process.

    PYTHONPATH=envfix python bench/overhead.py --model tiny --rounds 6 --repeats 3
    python bench/overhead.py --model qwen3-vl-4b              # on a GPU host: adds the GPU modes

Modes run interleaved (untraced, host python stacks, host native, GPU python stacks, GPU C++ stacks, all), each
switched on exactly as `tracer diff` does it (memray Tracker; torch memory history of live blocks),
`--repeats` times, each a block of `--rounds` fresh-image rounds after one unmeasured round; the median round
time of each mode is divided by the untraced median. Prints a Markdown table, then the cost of reading RSS by
mapping (/proc/self/smaps, done at every mark) on the same engine: tracer's reader against psutil's
`memory_maps(grouped=False)`, and both against the median untraced round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracer.capture import CaptureWriter  # noqa: E402
from tracer.record.backends.memray import MemrayBackend  # noqa: E402
from tracer.record.backends.torch_cuda import TorchCudaBackend  # noqa: E402
from tracer.record.smaps import SmapsProbe  # noqa: E402
from tracer.workload.config import WorkloadConfig  # noqa: E402
from tracer.workload.engine import InProcessEngine  # noqa: E402


def modes(gpu: bool) -> dict[str, dict]:
    out = {"untraced": {}, "host python stacks": {"host": "python"}, "host native stacks": {"host": "native"}}
    if gpu:
        out.update({"GPU python stacks": {"gpu": "python"}, "GPU C++ stacks": {"gpu": "all"},
                    "host python + GPU python": {"host": "python", "gpu": "python"},
                    "all (host native + GPU C++)": {"host": "native", "gpu": "all"}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    engine = InProcessEngine(WorkloadConfig(model=args.model, batch=args.batch))
    engine.start()
    import torch

    gpu = torch.cuda.is_available()
    times: dict[str, list[float]] = {name: [] for name in modes(gpu)}
    index = 0
    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-"))
    for rep in range(args.repeats):
        for name, mode in modes(gpu).items():
            writer = CaptureWriter(tmp / f"{rep}-{len(times[name])}", {"run": {}})
            backends = []
            if "gpu" in mode:
                backends.append(TorchCudaBackend(cpp_stacks=mode["gpu"] == "all"))
            if "host" in mode:
                backends.append(MemrayBackend(native_traces=mode["host"] == "native"))
            for backend in backends:
                backend.start(writer, "main")
            for k in range(args.rounds + 1):
                run = engine.round(index)
                index += 1
                start = time.perf_counter()
                run()
                if k:  # the first round of a block warms the mode up
                    times[name].append(time.perf_counter() - start)
            for backend in backends:
                backend.stop()
            writer.finish("complete")
            shutil.rmtree(writer.dir)
    base = statistics.median(times["untraced"])
    device = torch.cuda.get_device_name(0) if gpu else f"CPU, {os.cpu_count()} cores"
    print(f"model {args.model}, batch {args.batch}, {args.repeats} x {args.rounds} rounds per mode, {device}")
    print("| mode | median round (s) | vs untraced |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / base:.2f}x |")
    print_smaps_cost(base)


def print_smaps_cost(round_seconds: float, reads: int = 20) -> None:
    """Median time of one read of the process's mappings, tracer's reader and psutil's, side by side."""
    import psutil

    probe, proc = SmapsProbe(), psutil.Process()
    ours, theirs = [], []
    for _ in range(reads):
        start = time.perf_counter()
        probe.read()
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        proc.memory_maps(grouped=False)
        theirs.append(time.perf_counter() - start)
    mappings = len(probe.last or {})
    t, p = statistics.median(ours), statistics.median(theirs)
    print(f"\nRSS by mapping, {mappings} mappings, median of {reads} reads\n| reader | one read (s) | vs psutil | "
          f"vs untraced round |\n|---|---|---|---|")
    print(f"| tracer.record.smaps | {t:.4f} | {t / p:.2f}x | {t / round_seconds:.2f}x |")
    print(f"| psutil memory_maps(grouped=False) | {p:.4f} | 1.00x | {p / round_seconds:.2f}x |")


if __name__ == "__main__":
    main()
