"""Mutation testing of the pure modules against the fast unit tests that cover them (mutmut).

For each module, mutmut changes the code one small edit at a time (an operator, a constant, a comparison, a
returned value) and runs the unit tests that cover the mutated function; a mutant the tests do not fail on
"survives". Each module runs in its own scratch copy of the package with only its own test files selected, so
a mutant costs seconds; tests that run tracer in a subprocess are left out (slow, and the mutant lives in the
test process only). Prints a Markdown table (score per module) and the surviving mutants with their diffs.
Mutants no test can kill (the code means the same with or without the edit) are listed with the reason in
bench/mutation_equivalents.toml; the table gives the raw score (every mutant) and the score with those
equivalent survivors left out, which is the one held to the target. A bench, not CI: a full run takes tens
of minutes on 2 cores.

    PYTHONPATH=envfix python bench/mutation.py                      # every module
    PYTHONPATH=envfix python bench/mutation.py verdicts trend       # some of them
    PYTHONPATH=envfix python bench/mutation.py --out reports/bench/mutation.md
    PYTHONPATH=envfix python bench/mutation.py capture --save /tmp/capture.json     # keep the raw results
    PYTHONPATH=envfix python bench/mutation.py --merge /tmp/*.json --out reports/bench/mutation.md
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = "tests/unit/"
TARGET = 0.85
EQUIVALENTS_FILE = Path(__file__).resolve().parent / "mutation_equivalents.toml"

# module name -> (source file, the unit test files that cover it)
MODULES = {
    "verdicts": ("tracer/analysis/verdicts.py", ["test_verdict_rules.py", "test_verdicts.py", "test_trend.py"]),
    "trend": ("tracer/analysis/trend.py", ["test_trend.py", "test_verdicts.py"]),
    "gate evaluate": ("tracer/output/gate/evaluate.py", ["test_gate.py", "test_gate_evaluate.py"]),
    "baseline": ("tracer/output/gate/baseline.py", ["test_gate.py", "test_baseline_file.py"]),
    "report_file": ("tracer/output/report_file.py", ["test_gate.py", "test_report_file.py"]),
    "stacks": ("tracer/analysis/stacks.py", ["test_stacks.py", "test_gate.py", "test_report_output.py"]),
    "own_frames": ("tracer/own_frames.py", ["test_stacks.py", "test_report_output.py"]),
    "components": ("tracer/analysis/components.py", ["test_components.py"]),
    "snapshots": ("tracer/analysis/snapshots.py", ["test_gpu_snapshot.py", "test_snapshot_parsing.py",
                                                   "test_snapshot_diff_cli.py"]),
    "capture": ("tracer/capture.py", ["test_capture_reader.py", "test_hostile_inputs.py", "test_rss.py",
                                     "test_auto_rounds.py"]),
}


def cli_tests(test_file: Path) -> list[str]:
    """Tests that run tracer in a subprocess: slow, and a mutant in this process cannot reach them."""
    tree = ast.parse(test_file.read_text())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
            and any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) in SUBPROCESS_CALLS
                    for n in ast.walk(node))]


SUBPROCESS_CALLS = {"run_tracer", "run", "Popen", "check_output", "run_env", "run_measured"}


def scratch_copy(source: str, tests: list[str]) -> Path:
    """The package and the selected unit tests in a fresh directory, with mutmut's settings for one module."""
    work = Path(tempfile.mkdtemp(prefix="tracer-mutation-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tracer", work / "tracer", ignore=ignore)
    (work / UNIT).mkdir(parents=True)
    for helper in ("conftest.py", "hostile_helpers.py", "report_samples.py"):
        shutil.copy(ROOT / "tests" / helper, work / "tests" / helper)
    for folder in ("fixtures", "plants"):
        shutil.copytree(ROOT / "tests" / folder, work / "tests" / folder, ignore=ignore)
    selected = [UNIT + t for t in tests if (ROOT / UNIT / t).exists()]
    for test in selected:
        shutil.copy(ROOT / test, work / test)
    slow = [name for test in selected for name in cli_tests(work / test)]
    skip = ["-k", "not (" + " or ".join(slow) + ")"] if slow else []
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["tracer"]\n'
        f"only_mutate = [{json.dumps(source)}]\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(selected)}\n"
        f"pytest_add_cli_args = {json.dumps(['-p', 'no:cacheprovider', '-p', 'no:tracer', '-q', '-x', *skip])}\n"
        "\n[tool.pytest.ini_options]\n"
        'pythonpath = ["tests"]\n'
        'markers = ["engine: runs a real vLLM engine", "gpu: needs a CUDA device"]\n')
    return work


def mutmut(work: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=scratch_env(work),
                          capture_output=True, text=True, timeout=timeout)


# Run inside the scratch copy: every mutant that survived (or had no test), with its diff; one process for all of
# them (`mutmut show` starts a process per mutant).
SURVIVOR_DIFFS = """
import json
from mutmut.__main__ import SourceFileMutationData, get_diff_for_mutant, status_by_exit_code, walk_mutatable_files
out = {}
for path in walk_mutatable_files():
    data = SourceFileMutationData(path=path)
    data.load()
    for name, code in data.exit_code_by_key.items():
        if status_by_exit_code[code] in ("survived", "no tests"):
            out[name] = get_diff_for_mutant(name, path=data.path).strip()
print(json.dumps(out))
"""


def mutmut_python(work: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=work, env=scratch_env(work), capture_output=True,
                          text=True, check=True)


def scratch_env(work: Path) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "envfix"), str(work)]), HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1")


def run_module(name: str, jobs: int, timeout: float) -> dict:
    source, tests = MODULES[name]
    work = scratch_copy(source, tests)
    start = time.monotonic()
    try:
        ran = mutmut(work, "run", "--max-children", str(jobs), timeout=timeout)
    except subprocess.TimeoutExpired:
        ran = None
    seconds = time.monotonic() - start
    mutmut(work, "export-cicd-stats")
    stats_file = work / "mutants" / "mutmut-cicd-stats.json"
    if not stats_file.exists():
        tail = (ran.stdout + ran.stderr)[-2000:] if ran else "timed out"
        raise SystemExit(f"mutmut wrote no results for {name}:\n{tail}")
    stats = json.loads(stats_file.read_text())
    diffs = json.loads(mutmut_python(work, SURVIVOR_DIFFS).stdout)
    shutil.rmtree(work, ignore_errors=True)
    return {"name": name, "source": source, "tests": tests, "stats": stats, "seconds": seconds,
            "survivors": diffs, "timed_out": ran is None}


def load_equivalents(path: Path = EQUIVALENTS_FILE) -> dict[str, str]:
    """Mutant name -> why no test can tell it from the original code."""
    return tomllib.loads(path.read_text()) if path.exists() else {}


def score(stats: dict, equivalent: int = 0) -> float:
    """Killed (or timed out) over the mutants judged, leaving out `equivalent` survivors."""
    judged = stats["killed"] + stats["survived"] + stats.get("no_tests", 0) + stats.get("timeout", 0) - equivalent
    return (stats["killed"] + stats.get("timeout", 0)) / judged if judged else 0.0


def split_survivors(result: dict, equivalents: dict[str, str]) -> tuple[dict, dict]:
    """The module's survivors: (not yet killed, listed as equivalent)."""
    alive = {m: d for m, d in result["survivors"].items() if m not in equivalents}
    return alive, {m: d for m, d in result["survivors"].items() if m in equivalents}


def module_score(result: dict, equivalents: dict[str, str]) -> float:
    return score(result["stats"], len(split_survivors(result, equivalents)[1]))


def render(results: list[dict], equivalents: dict[str, str]) -> str:
    runs: dict[str, str] = {}
    for r in results:
        runs.setdefault(r["command"], r["date"])
    lines = ["# Mutation testing of the pure modules (mutmut)", "",
             *(f"- command: `{command}` (from {date})" for command, date in runs.items()),
             f"- machine: {platform.node() or 'unknown'}, {os.cpu_count()} cores, Python {platform.python_version()}",
             f"- target: at least {TARGET:.0%} of the mutants killed in each module, equivalent mutants left out",
             "- raw score: killed / all mutants; score: killed / (all mutants - equivalent survivors)", "",
             "| module | tests | mutants | killed | timeout | survived | no tests | equivalent | raw score | score "
             "| target | seconds | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["stats"]
        same = len(split_survivors(r, equivalents)[1])
        ok = "met" if module_score(r, equivalents) >= TARGET else "MISSED"
        lines.append(f"| `{r['source']}` | {', '.join(r['tests'])} | {s['total']} | {s['killed']} | "
                     f"{s.get('timeout', 0)} | {s['survived']} | {s.get('no_tests', 0)} | {same} | {score(s):.1%} | "
                     f"{module_score(r, equivalents):.1%} | {ok} | "
                     f"{r['seconds']:.0f}{' (timed out)' if r['timed_out'] else ''} | {r['date']} |")
    for r in results:
        alive, same = split_survivors(r, equivalents)
        if same:
            lines += ["", f"## Equivalent mutants: `{r['source']}`", ""]
            lines += [f"- `{m}`: {equivalents[m]}" for m in same]
        killed = [m for m in equivalents if m.startswith(module_prefix(r["source"])) and m not in r["survivors"]]
        if killed:
            lines += ["", "Listed as equivalent but killed in this run (the list is out of date): "
                      + ", ".join(f"`{m}`" for m in killed)]
        if alive:
            lines += ["", f"## Surviving mutants: `{r['source']}`", ""]
            for mutant, diff in alive.items():
                lines += [f"### {mutant}", "", "```diff", diff, "```", ""]
    return "\n".join(lines) + "\n"


def module_prefix(source: str) -> str:
    """How mutmut names the mutants of a source file: its dotted module path."""
    return source.removesuffix(".py").replace("/", ".") + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", choices=[[], *MODULES], help="modules to mutate (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds at most per module")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--save", type=Path, help="also write the raw results (JSON) here, for --merge")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="SAVED",
                        help="run nothing: one report from the results of earlier --save runs")
    args = parser.parse_args()
    equivalents = load_equivalents()
    if args.merge:
        results = [r for path in args.merge for r in json.loads(path.read_text())]
    else:
        command = "python bench/mutation.py " + shlex.join(sys.argv[1:])
        results = []
        for name in args.modules or list(MODULES):
            results.append(run_module(name, args.jobs, args.timeout))
            results[-1].update(command=command, date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
            print(f"{name}: {score(results[-1]['stats']):.1%} killed, "
                  f"{module_score(results[-1], equivalents):.1%} with equivalents left out", file=sys.stderr)
        if args.save:
            args.save.write_text(json.dumps(results))
    text = render(results, equivalents)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
