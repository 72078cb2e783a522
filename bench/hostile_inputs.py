"""Peak memory and time of tracer on the bombs of tests/fixtures/hostile/, each in a fresh process, next to a
real snapshot of the same command for scale. Prints a Markdown table.

PYTHONPATH=envfix python bench/hostile_inputs.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PICKLES = ROOT / "tests" / "fixtures" / "hostile" / "pickles"
REAL = ROOT / "tests" / "fixtures" / "gpu" / "qwen3vl-4b-dims_stacks-all_round8.pickle.gz"
# VmHWM is this process's own peak RSS in KiB; ru_maxrss would carry the parent's peak across exec.
_MEASURED = ("import os, sys\nfrom tracer.cli import run\ntry:\n    run(sys.argv[1:])\nfinally:\n"
             "    hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
             "    open(os.environ['RSS_OUT'], 'w').write(hwm.split()[1])\n")


def measure(path: Path, **env) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        rss = Path(tmp) / "rss"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _MEASURED, "snapshot-diff", str(path), str(path)],
                              capture_output=True, cwd=tmp, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  [str(ROOT / "envfix"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
                                  "RSS_OUT": str(rss), **env})
        return proc.returncode, time.perf_counter() - start, int(rss.read_text()) / 1024


def main() -> None:
    rows = [("real 4B snapshot (53 MB inflated), for scale", REAL, {})]
    rows += [(p.name, p, {}) for p in sorted(PICKLES.glob("*")) if not p.name.startswith("code_")]
    rows.append(("gzip_bomb.pickle.gz, TRACER_MAX_INFLATED=64MiB", PICKLES / "gzip_bomb.pickle.gz",
                 {"TRACER_MAX_INFLATED": "64MiB"}))
    print("| input | file bytes | exit | seconds | peak RSS MiB |\n|---|---|---|---|---|")
    for name, path, env in rows:
        code, seconds, mib = measure(path, **env)
        print(f"| {name} | {path.stat().st_size} | {code} | {seconds:.2f} | {mib:.0f} |")


if __name__ == "__main__":
    main()
