"""Wall time of `tracer diff --rounds 8` (default tracing) vs the same loop untraced, side by side in one run.

    PYTHONPATH=envfix python bench/end_to_end.py [--rounds 8] [--repeats 3] [--model tiny] [--modes ...] [-- OPTS]
    python bench/end_to_end.py --model qwen3-vl-4b        # on a CUDA host: default tracing there includes the GPU

Each mode is a whole `tracer diff` command (engine start, warmup, rounds, drains, analysis, report), run
interleaved with the others, `--repeats` times, after one untimed run (cold file caches); medians reported:

- untraced: `--no-host-trace --no-gpu --no-drain` (counters only: no memray, no CUDA memory history, no drains);
- default: no option: memray host tracing, and on a CUDA host also torch's CUDA memory history with snapshots;
- screen: `--screen` (an untraced screening pass first, the traced pass only when a counter grows), when the
  installed tracer has it.

Besides the wall time of each command, the table splits it into the engine start (`engine_load_seconds`), the
rounds (sum of `rounds[].seconds`, warmup included) and the rest (interpreter and vLLM import, drains, tracer's
pauses at the marks, stopping the tracers, analysis and report), and gives the median round time after warmup.
OPTS after `--` go to every `tracer diff`. Not a test: prints a Markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MODES = {
    "untraced": ["--no-host-trace", "--no-gpu", "--no-drain"],
    "default": [],
    "screen": ["--screen"],
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def supports(option: str) -> bool:
    done = subprocess.run([PY, "-m", "tracer", "diff", "--help"], check=False, capture_output=True, text=True, cwd=ROOT)
    return option in done.stdout


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_diff(args, mode: str, out: Path, extra: list[str]) -> dict:
    cmd = [PY, "-m", "tracer", "diff", "--rounds", str(args.rounds), "--model", args.model, "--out", str(out),
           *MODES[mode], *extra]
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as logfile:
        code = subprocess.run(cmd, check=False, stdout=logfile, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - start
    if code not in (0, 1) or not (out / "report.json").exists():
        sys.exit(f"[bench] {mode}: tracer diff exited {code}; see {out.with_suffix('.log')}")
    report = json.loads((out / "report.json").read_text())
    rounds = report["rounds"]
    after_warmup = [r["seconds"] for r in rounds if r["phase"] != "warmup"]
    load = report["run"].get("engine_load_seconds") or 0.0
    total_rounds = sum(r["seconds"] for r in rounds)
    return {"wall": wall, "engine": load, "rounds": total_rounds, "rest": wall - load - total_rounds,
            "round": statistics.median(after_warmup) if after_warmup else float("nan"),
            "n_rounds": len(after_warmup), "verdict": report["verdict"], "code": code,
            "device": report["run"].get("device") or "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--modes", default=",".join(MODES), help=f"Comma-separated, of {', '.join(MODES)}.")
    parser.add_argument("--keep", help="Keep the reports under this directory (default: a temporary one, removed).")
    parser.add_argument("extra", nargs="*", help="Options for every tracer diff (after --).")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        sys.exit(f"[bench] unknown mode(s): {', '.join(unknown)}")
    if "screen" in modes and not supports("--screen"):
        log("this tracer has no --screen: skipping that mode")
        modes.remove("screen")
    load = [os.getloadavg()[0]]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tracer-bench-e2e-"))
    root.mkdir(parents=True, exist_ok=True)
    log(f"warm-up run (untimed): {modes[0]}, reports under {root}")
    run_diff(args, modes[0], root / "warmup", args.extra)
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(args.repeats):
        for mode in modes:
            row = run_diff(args, mode, root / f"{mode}-{rep}", args.extra)
            results[mode].append(row)
            log(f"{mode} #{rep + 1}: {row['wall']:.1f} s wall, median round {row['round']:.3f} s, {row['verdict']}")

    load.append(os.getloadavg()[0])

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    base = modes[0]
    print(f"# tracer diff --rounds {args.rounds}: traced vs untraced, end to end\n")
    traced = results["default" if "default" in results else base][0]  # an untraced run may not name the GPU
    print(f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; device (as tracer recorded it): "
          f"{traced['device']}; CPU {cpu_model()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}; "
          f"load average {load[0]:.1f} before, {load[1]:.1f} after")
    print(f"- command: `{' '.join(['python'] + [shlex.quote(a) for a in sys.argv])}`; model {args.model}; "
          f"median of {args.repeats} interleaved runs per mode, after one untimed run; ratios vs `{base}`")
    print(f"\n| mode | tracer diff options | wall (s) | wall vs {base} | engine start (s) | rounds (s) | rest (s) "
          f"| median round (s) | round vs {base} | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        verdicts = sorted({r["verdict"] for r in results[mode]})
        options = " ".join(MODES[mode] + args.extra) or "(defaults)"
        print(f"| {mode} | `{options}` | {med(mode, 'wall'):.1f} | {med(mode, 'wall') / med(base, 'wall'):.2f}x "
              f"| {med(mode, 'engine'):.1f} | {med(mode, 'rounds'):.1f} | {med(mode, 'rest'):.1f} "
              f"| {med(mode, 'round'):.3f} | {med(mode, 'round') / med(base, 'round'):.2f}x | {', '.join(verdicts)} |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
