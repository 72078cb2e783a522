"""`tracer analyze` vs `memray stats` and `memray flamegraph --leaks` on one capture of >= 5 million memray records.

    PYTHONPATH=envfix python bench/analysis.py [--repeats 5] [--rounds 24] [--cache-dir DIR] [--capture REPORT_DIR]
                                               [--also NAME=SOURCE_DIR ...]

The capture comes from a real `tracer diff --rounds N --trace-python-allocators` on the built-in tiny model,
made once and kept under `--cache-dir` (default `$TRACER_CACHE_DIR/bench`, else `~/.cache/tracer/bench`); its
records are counted with memray's FileReader, and a capture with fewer than `--min-records` is made again with
proportionally more rounds. Then, on that one `host.memray`, interleaved and `--repeats` times each (after one
untimed run of each), median reported:

- command lines, process start to exit (wall, and CPU = user + system of the child):
  `tracer analyze DIR --out TMP` (analysis, report.json, summary.md, report.html, growth.png),
  `python -m memray stats FILE`, `python -m memray flamegraph --leaks -f -o TMP FILE`, and
  `... flamegraph --temporal --leaks` (memray's own reporter over the same per-snapshot lifetimes that tracer
  reads);
- library calls, timed inside a fresh process (no interpreter start, no imports, no output files):
  `tracer.analysis.analyze()`, memray's `compute_statistics()` (what `memray stats` runs), and the floor of any
  analysis through memray's reader: `FileReader()` plus iterating `get_temporal_allocation_records()`.

`--also before=/path/to/old/checkout` times that tree's `tracer analyze` in the same rounds (it is put first on
PYTHONPATH) and checks that its report.json findings equal this tree's. The timed commands run without a
`sitecustomize.py` from PYTHONPATH (envfix's imports torch: +1 s for every process, whichever tool it is).
Not a test: prints a Markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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

IN_PROCESS = {  # name -> code run in a fresh interpreter; prints "wall cpu" of the timed part
    "tracer analysis (analyze())": """
from pathlib import Path
from tracer.analysis.analyze import analyze
from tracer.capture import read_capture
cap = read_capture(Path(TARGET))
W, C = time.perf_counter(), time.process_time()
analyze(cap)
""",
    "memray compute_statistics()": """
from memray._memray import compute_statistics
W, C = time.perf_counter(), time.process_time()
compute_statistics(FILE, report_progress=False, num_largest=5)
""",
    "memray FileReader + temporal records (floor)": """
import memray
W, C = time.perf_counter(), time.process_time()
reader = memray.FileReader(FILE)
for record in reader.get_temporal_allocation_records(merge_threads=True):
    record.intervals
""",
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed_env(extra_path: str | None = None) -> dict:
    """This environment, minus PYTHONPATH entries that hold a sitecustomize.py; `extra_path` first."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and not (Path(p) / "sitecustomize.py").exists()]
    if extra_path:
        parts.insert(0, extra_path)
    env["PYTHONPATH"] = os.pathsep.join(parts)
    if not parts:
        del env["PYTHONPATH"]
    return env


def count_records(host_file: Path) -> int:
    """Allocation and deallocation records in a capture, as memray's FileReader counts them on opening it."""
    import memray

    reader = memray.FileReader(str(host_file))
    try:
        return reader.metadata.total_allocations
    finally:
        reader.close()


def make_capture(directory: Path, rounds: int) -> None:
    cmd = [PY, "-m", "tracer", "diff", "--rounds", str(rounds), "--trace-python-allocators", "--out", str(directory)]
    log("making the capture: " + " ".join(cmd[1:]))
    start = time.perf_counter()
    with open(directory.parent / f"{directory.name}.log", "w") as out:
        code = subprocess.run(cmd, check=False, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code != 0:
        sys.exit(f"[bench] tracer diff failed (exit {code}); see {directory.parent / (directory.name + '.log')}")
    log(f"made in {time.perf_counter() - start:.0f} s")


def ensure_capture(args) -> tuple[Path, int, int]:
    """(report directory, records, rounds) of a capture with at least --min-records records."""
    if args.capture:
        target = Path(args.capture)
        host = target / "capture" / "host.memray" if (target / "capture").is_dir() else target / "host.memray"
        manifest = json.loads((host.parent / "manifest.json").read_text())
        return target, count_records(host), manifest["run"]["rounds"]
    cache = Path(args.cache_dir or os.environ.get("TRACER_CACHE_DIR") or Path.home() / ".cache" / "tracer") / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    rounds = args.rounds
    for _ in range(3):
        target = cache / f"analysis-tiny-pyalloc-{rounds}r"
        host = target / "capture" / "host.memray"
        if not host.exists():
            shutil.rmtree(target, ignore_errors=True)
            make_capture(target, rounds)
        records = count_records(host)
        log(f"capture {target}: {records:,} records")
        if records >= args.min_records:
            return target, records, rounds
        rounds = int(rounds * args.min_records / max(records, 1) * 1.15) + 1
        log(f"fewer than {args.min_records:,}: making one with {rounds} rounds")
    sys.exit("[bench] could not make a capture large enough")


def run_command(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall, CPU of the child) of one command line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"[bench] failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_in_process(code: str, target: Path, host: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU) of the timed part of `code`, measured inside a fresh interpreter."""
    program = (f"import time\nTARGET, FILE = {str(target)!r}, {str(host)!r}\n{code}\n"
               "print(time.perf_counter() - W, time.process_time() - C)\n")
    done = subprocess.run([PY, "-c", program], check=False, capture_output=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"[bench] in-process timing failed:\n{done.stderr.decode()[-2000:]}")
    wall, cpu = done.stdout.decode().split()[-2:]
    return float(wall), float(cpu)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def findings_of(report_dir: Path) -> list[dict]:
    return json.loads((report_dir / "report.json").read_text())["findings"]


def med(values: list[tuple[float, float]], i: int) -> float:
    """Median of the i-th of (wall, cpu) over repetitions."""
    return statistics.median(v[i] for v in values)


def print_table(kind: str, timings: dict, base: str, base_label: str) -> None:
    """Median wall and CPU seconds of each entry, and their ratios to `base`, as a Markdown table."""
    print(f"| {kind} | wall (s) | CPU (s) | wall vs {base_label} | CPU vs {base_label} |")
    print("|---|---|---|---|---|")
    base_wall, base_cpu = med(timings[base], 0), med(timings[base], 1)
    for name, values in timings.items():
        wall, cpu = med(values, 0), med(values, 1)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / base_wall:.2f}x | {cpu / base_cpu:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=24, help="Measured rounds of the capture (first try).")
    parser.add_argument("--min-records", type=int, default=5_000_000)
    parser.add_argument("--cache-dir", help="Where the capture is kept (default $TRACER_CACHE_DIR or ~/.cache/tracer).")
    parser.add_argument("--capture", help="Use this report (or capture) directory instead.")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                        help="Also time `tracer analyze` from another source tree (its parent of tracer/).")
    args = parser.parse_args()

    import memray

    target, records, rounds = ensure_capture(args)
    host = target / "capture" / "host.memray" if (target / "capture").is_dir() else target / "host.memray"
    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-analysis-"))
    env = timed_env()
    commands: dict[str, tuple[list[str], dict]] = {
        "tracer analyze": ([PY, "-m", "tracer", "analyze", str(target), "--out", str(tmp / "tracer")], env),
        "memray stats": ([PY, "-m", "memray", "stats", str(host)], env),
        "memray flamegraph --leaks": ([PY, "-m", "memray", "flamegraph", "--leaks", "-f", "-o",
                                       str(tmp / "memray-flamegraph.html"), str(host)], env),
        "memray flamegraph --temporal --leaks": ([PY, "-m", "memray", "flamegraph", "--temporal", "--leaks", "-f",
                                                  "-o", str(tmp / "memray-temporal.html"), str(host)], env),
    }
    for spec in args.also:
        name, _, source = spec.partition("=")
        commands[f"tracer analyze ({name})"] = ([PY, "-m", "tracer", "analyze", str(target), "--out",
                                                 str(tmp / f"also-{name}")], timed_env(str(Path(source).resolve())))
    cli: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    lib: dict[str, list[tuple[float, float]]] = {name: [] for name in IN_PROCESS}
    load = [os.getloadavg()[0]]
    log(f"timing {len(commands) + len(IN_PROCESS)} things, 1 + {args.repeats} times each, interleaved")
    for rep in range(args.repeats + 1):  # the first pass warms the page cache and the .pyc files, untimed
        for name, (cmd, cmd_env) in commands.items():
            result = run_command(cmd, cmd_env)
            if rep:
                cli[name].append(result)
        for name, code in IN_PROCESS.items():
            result = run_in_process(code, target, host, env)
            if rep:
                lib[name].append(result)
        log(f"pass {rep}/{args.repeats} done" + (" (warm-up)" if not rep else ""))
    load.append(os.getloadavg()[0])

    same = {}
    for spec in args.also:
        name = spec.partition("=")[0]
        same[name] = findings_of(tmp / f"also-{name}") == findings_of(tmp / "tracer")

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    findings = findings_of(tmp / "tracer")
    print(f"# tracer analyze vs memray on a {records / 1e6:.1f}M-record capture\n")
    print(f"- date: {now}; machine: {machine()}; load average {load[0]:.1f} before, {load[1]:.1f} after")
    print(f"- Python {platform.python_version()}, memray {memray.__version__}")
    print(f"- capture: `tracer diff --rounds {rounds} --trace-python-allocators` on the tiny model: "
          f"{records:,} records (memray FileReader), host.memray {host.stat().st_size / 2**20:.1f} MiB, "
          f"{len(findings)} findings in report.json")
    print(f"- command: `{' '.join(['python'] + sys.argv)}`; median of {args.repeats} interleaved runs each, "
          "after one untimed run")
    print("\nCommand lines, process start to exit (CPU = user + system time of the process):\n")
    print_table("command", {f"`{name}`": values for name, values in cli.items()}, "`memray stats`", "memray stats")
    print("\nLibrary calls, timed inside a fresh process (no interpreter start, imports or output files):\n")
    print_table("call", lib, "memray compute_statistics()", "compute_statistics")
    for name, equal in same.items():
        print(f"\nreport.json findings of `tracer analyze ({name})` and of this tree: "
              f"{'identical' if equal else 'DIFFERENT'}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
