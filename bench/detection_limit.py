"""Smallest leak per round that tracer reports as `leak` in 8 rounds, on one engine, at several sizes.

    PYTHONPATH=envfix python bench/detection_limit.py --model tiny          # host (CPU tensors) on a CPU host
    python bench/detection_limit.py --model qwen3-vl-4b                     # GPU blocks on a CUDA host

Plants tests/plants/gpu_encoder_outputs.py (a slice of every vision-encoder output kept after its request) and
for each size runs drain, baseline, measured rounds and the final drain under tracer's round driver, then the
same analysis as `tracer analyze`. Prints, per size: bytes leaked per round, whether the planted group was found,
its verdict and rank among leaks, and how many other leak verdicts there were (false positives).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracer.analysis.analyze import analyze  # noqa: E402
from tracer.analysis.verdicts import LEAK, Thresholds  # noqa: E402
from tracer.capture import CaptureWriter, read_capture  # noqa: E402
from tracer.record.driver import Driver, RunPlan, TracingOptions, run_rounds  # noqa: E402
from tracer.record.session import load_preload  # noqa: E402
from tracer.units import parse_size  # noqa: E402
from tracer.workload.config import WorkloadConfig  # noqa: E402
from tracer.workload.engine import InProcessEngine  # noqa: E402

PLANT = ROOT / "tests" / "plants" / "gpu_encoder_outputs.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--sizes", default="4KiB,16KiB,64KiB,256KiB", help="bytes kept per encoder output")
    parser.add_argument("--min-leak-per-round", default="64KiB", help="analysis threshold, as tracer diff's")
    parser.add_argument("--min-leak", default="256KiB", help="analysis threshold, as tracer diff's")
    args = parser.parse_args()
    load_preload(str(PLANT))
    plant = sys.modules[PLANT.stem]
    engine = InProcessEngine(WorkloadConfig(model=args.model, rounds=args.rounds))
    engine.start()
    plant._limit = 0
    engine.round(0)()  # warmup, once for all sizes
    tracing = TracingOptions()
    domain = "gpu" if tracing.gpu_enabled() else "host"
    thresholds = Thresholds(parse_size(args.min_leak_per_round), parse_size(args.min_leak))
    rows = []
    for size_text in args.sizes.split(","):
        size = parse_size(size_text)
        capture_dir = Path(tempfile.mkdtemp(prefix="tracer-limit-"))
        writer = CaptureWriter(capture_dir, {"run": {"model": args.model, "rounds": args.rounds}})
        plant._kept.clear()
        plant._limit = size
        run_rounds(Driver(engine, writer, tracing, RunPlan(warmup=0, rounds=args.rounds, holders=False)))
        writer.finish("complete")
        leaked_per_round = sum(t.numel() * t.element_size() for t in plant._kept) / args.rounds
        plant._kept.clear()
        plant._limit = 0
        result = analyze(read_capture(capture_dir), thresholds)
        leaks = [f for f in result.findings if f.verdict == LEAK]
        planted = [f for f in result.findings if f.domain == domain
                   and any(fr.function == "keep_encoder_outputs" for fr in f.stack)]
        rank = next((i + 1 for i, f in enumerate(leaks) if f in planted), None)
        verdict = planted[0].verdict if planted else "not found"
        others = sum(1 for f in leaks if f not in planted)
        rows.append((size_text, leaked_per_round, verdict, rank, others))
        print(f"[limit] {size_text}: {leaked_per_round / 1024:.1f} KiB/round -> {verdict}, rank {rank}, "
              f"{others} other leak(s)", file=sys.stderr, flush=True)
    print(f"model {args.model}, {args.rounds} rounds, domain {domain}, --min-leak-per-round "
          f"{args.min_leak_per_round} --min-leak {args.min_leak}")
    print("| kept per output | leaked per round | planted group | rank among leaks | other leak verdicts |")
    print("|---|---|---|---|---|")
    for size_text, per_round, verdict, rank, others in rows:
        print(f"| {size_text} | {per_round / 1024:.1f} KiB | {verdict} | {rank or '-'} | {others} |")


if __name__ == "__main__":
    main()
