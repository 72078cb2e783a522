"""Detection limit of tracer's analysis: the smallest planted leak it reports, and clean runs that must stay clean.

    PYTHONPATH=envfix python bench/detection_limit.py --model tiny          # all three parts, on a CPU host
    python bench/detection_limit.py --model qwen3-vl-4b --parts limit       # GPU blocks on a CUDA host

Three parts (`--parts`, comma-separated), each printing a Markdown table:

- limit: plants tests/plants/gpu_encoder_outputs.py (a slice of every vision-encoder output kept after its
  request) and for each size runs drain, baseline, measured rounds and the final drain under tracer's round
  driver on one engine, then the same analysis as `tracer analyze`, with the thresholds given (default: tracer's
  defaults, for a like-for-like table with reports/bench/detection-limit-before.md). Per size: bytes leaked per
  round, the planted group's verdict and rank among leaks, and how many other leak verdicts there were.
- list: `tracer diff --rounds auto` with tests/plants/kv_block_id_list.py (a list of KV block ids that grows a
  few KiB a round), one row per `--list-entries` (list entries appended per KV block; 60, the plant's own,
  makes about 4 KiB a round) and per `--list-thresholds`: the planted list's verdict, rank among leaks, its growth
  per round, the rounds run and added, its holder.
- clean: the clean matrix of bench/clean_matrix.py (no plant; fresh and fixed images, the processor cache on
  and off) at each of `--clean-rounds`, default thresholds: the verdict counts of each run (the target: no leak,
  `leak?` or cycle).

The list and clean parts run the whole `tracer diff` command, as a user would. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

from clean_matrix import run_matrix, table  # noqa: E402  (bench/ is the script's directory)

PLANT = ROOT / "tests" / "plants" / "gpu_encoder_outputs.py"
LIST_PLANT = ROOT / "tests" / "plants" / "kv_block_id_list.py"
LIST_PLANTER = "get_new_blocks_recording_ids"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="limit,list,clean", help="which parts to run: limit, list, clean")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds of the limit part")
    parser.add_argument("--sizes", default="4KiB,16KiB,64KiB,256KiB", help="bytes kept per encoder output")
    parser.add_argument("--min-leak-per-round", default="64KiB", help="analysis threshold of the limit part")
    parser.add_argument("--min-leak", default="256KiB", help="analysis threshold of the limit part")
    parser.add_argument("--list-entries", default="60",
                        help="list entries appended per KV block, comma-separated: one list run each (60: ~4 KiB/round)")
    parser.add_argument("--list-thresholds", action="append",
                        help="tracer diff threshold options of the list part, one run each (repeatable; '' for the "
                             "defaults). Default: --min-leak-per-round 2KiB --min-leak 64KiB")
    parser.add_argument("--max-rounds", type=int, default=32, help="cap of --rounds auto in the list part")
    parser.add_argument("--clean-rounds", default="8,32", help="measured rounds of the clean runs")
    parser.add_argument("--out", type=Path, help="keep the reports of the list and clean parts here")
    args = parser.parse_args()
    parts = args.parts.split(",")
    out = args.out or Path(tempfile.mkdtemp(prefix="tracer-limit-"))
    if "limit" in parts:
        limit_part(args)
    if "list" in parts:
        list_part(args, out)
    if "clean" in parts:
        clean_part(args, out)


def limit_part(args) -> None:
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
    print()


def tracer_diff(out: Path, *options: str) -> dict:
    """Run `tracer diff` as a user would; its report."""
    paths = [str(ROOT / "envfix"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-m", "tracer", "diff", "--out", str(out), *options]
    print("[limit] " + " ".join(command[2:]), file=sys.stderr, flush=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"tracer diff failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads((out / "report.json").read_text())


def measured(report: dict) -> int:
    return sum(1 for r in report["rounds"] if r["phase"] == "measured")


def list_part(args, out: Path) -> None:
    rows = []
    for entries in (int(e) for e in args.list_entries.split(",")):
        for thresholds in args.list_thresholds or ["--min-leak-per-round 2KiB --min-leak 64KiB"]:
            run_dir = out / f"list-{entries}-{'-'.join(t.lstrip('-') for t in thresholds.split()) or 'defaults'}"
            run_dir.mkdir(parents=True, exist_ok=True)
            entries_file = run_dir / "list_entries.py"  # sets the plant's constant; the plant reads it per call
            entries_file.write_text(f"import sys\n\nsys.modules[{LIST_PLANT.stem!r}].ENTRIES_PER_BLOCK = {entries}\n")
            options = ["--model", args.model, "--rounds", "auto", "--max-rounds", str(args.max_rounds),
                       "--preload", str(LIST_PLANT), "--preload", str(entries_file), *thresholds.split()]
            report = tracer_diff(run_dir / "report", *options)
            rows.append((entries, thresholds or "defaults", report))
    print(f"`tracer diff --model {args.model} --rounds auto --max-rounds {args.max_rounds} --preload "
          f"{LIST_PLANT.relative_to(ROOT)} THRESHOLDS` (the list's entries per KV block set by a second --preload)")
    print("| entries per block | thresholds | planted list grows per round (Theil-Sen) | kept at the end | verdict | "
          "rank among leaks | other leak verdicts | measured rounds | rounds added | holder |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for entries, thresholds, report in rows:
        leaks = [f for f in report["findings"] if f["verdict"] == "leak"]
        planted = [f for f in report["findings"] if any(fr["function"] == LIST_PLANTER for fr in f["stack"])]
        top = max(planted, key=lambda f: f["bytes"]) if planted else None
        rank = next((i + 1 for i, f in enumerate(leaks) if top is not None and f["id"] == top["id"]), None)
        slope = top["details"]["trend"]["slope_bytes_per_round"] if top else 0
        holder = (top["details"].get("holders") or ["-"])[0] if top else "-"
        others = sum(1 for f in leaks if top is None or f["id"] != top["id"])
        print(f"| {entries} | {thresholds} | {slope / 1024:.1f} KiB | {top['bytes'] / 1024 if top else 0:.1f} KiB | "
              f"{top['verdict'] if top else 'not found'} | {rank or '-'} | {others} | {measured(report)} | "
              f"{report['run'].get('rounds_added')} | `{holder}` |")
    for entries, thresholds, report in rows:
        for note in report["notes"]:
            if note.startswith("--rounds auto"):
                print(f"\n{entries} entries, {thresholds}: {note}")
    print()


def clean_part(args, out: Path) -> None:
    rows = run_matrix(args.model, [int(r) for r in args.clean_rounds.split(",")], out / "clean", [])
    print(f"clean runs, model {args.model}, default thresholds")
    print(table(rows))
    print()


if __name__ == "__main__":
    main()
