"""Clean runs must stay clean: `tracer diff` without a plant, fresh and fixed images, vLLM's processor cache on and
off (`mm_processor_cache_gb=0`), at each number of measured rounds asked; the verdict counts of every run.

    PYTHONPATH=envfix python bench/clean_matrix.py --rounds 32
    PYTHONPATH=envfix python bench/clean_matrix.py --rounds 8,32 --reanalyze 2KiB/64KiB --out /tmp/clean

Each run is the whole `tracer diff` command, as a user would run it, one at a time. The target: no leak, `leak?` or
cycle verdict in any run. `--reanalyze PER_ROUND/TOTAL` (repeatable) also rebuilds each saved capture offline with
`tracer analyze` at those thresholds (what lowering the defaults would do to clean runs, without new engine runs).
Prints a Markdown table; exits 1 when any row has a leak, `leak?` or cycle verdict. Not a test: a 32-round run of the
tiny model takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = [("fresh", True), ("fixed", True), ("fresh", False), ("fixed", False)]
NOT_CLEAN = ("leak", "leak?", "cycle")
COLUMNS = ("leak", "leak?", "cycle", "cache", "transient")


def tracer(*args: str) -> subprocess.CompletedProcess:
    """Run a tracer command in a fresh interpreter, with envfix/ and this checkout first on the path."""
    paths = [str(ROOT / "envfix"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    print("[clean] tracer " + " ".join(args), file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, "-m", "tracer", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"tracer {args[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def verdict_counts(report: dict) -> Counter:
    """Findings per verdict; transients include those the report leaves out (it lists only the largest)."""
    counts = Counter(f["verdict"] for f in report["findings"])
    counts["transient"] += report.get("omitted", {}).get("count", 0)
    return counts


def not_clean(report: dict) -> list[str]:
    return [f"{f['verdict']} {f['component']} {f['owner'].get('function')} {f['per_round_bytes']}"
            for f in report["findings"] if f["verdict"] in NOT_CLEAN]


def clean_options(images: str, cache: bool, rounds: int) -> list[str]:
    return ["--rounds", str(rounds), "--images", images, *(() if cache else ("--engine-arg", "mm_processor_cache_gb=0"))]


def run_matrix(model: str, rounds_list: list[int], out: Path, reanalyze: list[str]) -> list[dict]:
    """Every clean run at every number of rounds; one row per run and thresholds (the run's, then `reanalyze`)."""
    rows = []
    for rounds in rounds_list:
        for images, cache in RUNS:
            report_dir = out / f"{images}-cache-{'on' if cache else 'off'}-{rounds}"
            options = ["--model", model, *clean_options(images, cache, rounds)]
            load = os.getloadavg()[0]
            start = time.monotonic()
            tracer("diff", "--out", str(report_dir), *options)
            seconds = time.monotonic() - start
            base = {"images": images, "cache": cache, "rounds": rounds, "seconds": seconds, "load": load,
                    "command": "tracer diff " + " ".join(options)}
            for thresholds in [None, *reanalyze]:
                report_path = report_dir / "report.json"
                if thresholds is not None:
                    per_round, total = thresholds.split("/")
                    again = out / "reanalyzed" / f"{report_dir.name}-{per_round}-{total}"
                    tracer("analyze", str(report_dir), "--out", str(again), "--min-leak-per-round", per_round,
                           "--min-leak", total)
                    report_path = again / "report.json"
                report = json.loads(report_path.read_text())
                th = report["thresholds"]
                row = {**base, "thresholds": f"{th['min_per_round'] // 1024}KiB/{th['min_total'] // 1024}KiB",
                       "verdict": report["verdict"], "counts": verdict_counts(report),
                       "rss": sum(1 for f in report["findings"] if f["domain"] == "rss"),
                       "not_clean": not_clean(report)}
                rows.append(row)
                print(f"[clean] {row['command']} at {row['thresholds']}: {row['verdict']} {dict(row['counts'])} "
                      f"{row['not_clean']}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| images | processor cache | rounds | thresholds (per round / kept) | verdict | "
             + " | ".join(COLUMNS) + " | rss findings | seconds | load |",
             "|---|---|---|---|---|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        cache = "on" if r["cache"] else "off (mm_processor_cache_gb=0)"
        counts = " | ".join(str(r["counts"].get(c, 0)) for c in COLUMNS)
        lines.append(f"| {r['images']} | {cache} | {r['rounds']} | {r['thresholds']} | {r['verdict']} | {counts} | "
                     f"{r['rss']} | {r['seconds']:.0f} | {r['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--rounds", default="32", help="measured rounds of each run, comma-separated (e.g. 8,32)")
    parser.add_argument("--reanalyze", action="append", default=[], metavar="PER_ROUND/TOTAL",
                        help="also analyse each capture at these thresholds (e.g. 2KiB/64KiB); repeatable")
    parser.add_argument("--out", type=Path, help="keep the reports here (default: a new temporary directory)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tracer-clean-"))
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = run_matrix(args.model, [int(r) for r in args.rounds.split(",")], out, args.reanalyze)
    print(f"`{' '.join(['python', *sys.argv])}`, started {started}, {os.cpu_count()} CPUs, model {args.model}; "
          f"reports in {out}")
    print()
    print(table(rows))
    bad = [r for r in rows if r["not_clean"]]
    for r in bad:
        print(f"\n{r['command']} at {r['thresholds']}: " + "; ".join(r["not_clean"]))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
