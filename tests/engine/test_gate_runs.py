"""The gate on real runs of the vLLM CPU engine: clean runs pass every time, the planted leak fails every time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from conftest import PLANTS, load_report, run_tracer, tracer_env

REPEATS = 5
PLANT = str(PLANTS / "host_image_bytes.py")


def run_env(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, cwd=cwd,
                          env={**tracer_env(), **env}, timeout=600)


def gated_runs(base: Path, preload: list[str]) -> list[tuple[Path, subprocess.CompletedProcess]]:
    """REPEATS runs of the default tiny workload (`tracer diff --gate`, 8 rounds), one after the other, in every
    gate format: text, github (with a step summary), junit, markdown, and text with --json."""
    runs = []
    for k, extra in enumerate([[], ["--format", "github"], ["--format", "junit"], ["--format", "markdown"],
                               ["--json"]][:REPEATS]):
        out = base / f"run{k}"
        env = {"GITHUB_STEP_SUMMARY": str(base / f"summary{k}.md")} if "github" in extra else {}
        result = run_env("diff", "--gate", "--out", str(out), *preload, *extra, cwd=base, **env)
        runs.append((out, result))
    return runs


@pytest.fixture(scope="module")
def clean_gated(tmp_path_factory):
    return gated_runs(tmp_path_factory.mktemp("gate-clean"), [])


@pytest.fixture(scope="module")
def planted_gated(tmp_path_factory):
    return gated_runs(tmp_path_factory.mktemp("gate-planted"), ["--preload", PLANT])


@pytest.mark.engine
def test_clean_default_workload_passes_the_gate_every_time(clean_gated):
    for out, result in clean_gated:
        assert result.returncode == 0, (out, result.stdout[-3000:], result.stderr[-3000:])
        assert load_report(out)["verdict"] == "clean"
        gate_output = result.stderr if "--json" in result.args else result.stdout
        assert "tracer gate: PASS" in gate_output
        report = load_report(out)
        assert report["status"] == "complete"
        assert [r["phase"] for r in report["rounds"]].count("measured") == 8  # the default workload, all of it
        assert not [f for f in report["findings"] if f["verdict"] in ("leak", "cycle", "leak?")]


@pytest.mark.engine
def test_planted_leak_fails_the_gate_every_time(planted_gated):
    ids = set()
    for out, result in planted_gated:
        assert result.returncode == 1, (out, result.stdout[-3000:], result.stderr[-3000:])
        gate_output = result.stderr if "--json" in result.args else result.stdout
        assert "tracer gate: FAIL" in gate_output and "user or plugin code" in gate_output
        per_round = "| per round |" if "markdown" in result.args else "MiB/round"
        assert "remember_images" in gate_output and per_round in gate_output
        (leak,) = [f for f in load_report(out)["findings"] if f["verdict"] == "leak"]
        ids.add(leak["id"])
    assert len(ids) == 1  # the same stable id in every run


@pytest.mark.engine
def test_gate_formats_on_real_runs(clean_gated, planted_gated, tmp_path):
    (clean_out, clean), (out, planted) = clean_gated[1], planted_gated[1]  # --format github
    assert "::notice title=tracer gate::" in clean.stdout
    assert (clean_out.parent / "summary1.md").read_text().startswith("### tracer gate: PASS")
    (error,) = [line for line in planted.stdout.splitlines() if line.startswith("::error")]
    assert "title=tracer gate%3A new leak in user or plugin code" in error and "remember_images" in error
    summary = (out.parent / "summary1.md").read_text()
    assert summary.startswith("### tracer gate: FAIL") and "**new leak**" in summary
    # junit (default file name, in the working directory)
    for (_, result), failures in ((clean_gated[2], "0"), (planted_gated[2], "2")):
        xml = ET.parse(_cwd_of(result) / "tracer-gate.xml").getroot()
        assert xml.tag == "testsuites" and xml.find("testsuite").get("failures") == failures
    # markdown on stdout; --json keeps stdout for the report alone
    assert planted_gated[3][1].stdout.count("### tracer gate: FAIL") == 1
    assert json.loads(clean_gated[4][1].stdout)["verdict"] == "clean"


def _cwd_of(result: subprocess.CompletedProcess) -> Path:
    """gated_runs runs each command in the parent of its --out directory."""
    return Path(result.args[result.args.index("--out") + 1]).parent


@pytest.mark.engine
def test_baseline_made_by_tracer_baseline_suppresses_the_planted_leak(planted_gated, tmp_path):
    out, _ = planted_gated[0]
    baseline = tmp_path / "ci" / "baseline.json"
    made = run_tracer("baseline", str(out), "-o", str(baseline), "--reason", "planted by tests/plants")
    assert made.returncode == 0, made.stderr
    (entry,) = json.loads(baseline.read_text())["accepted"]
    assert entry["reason"] == "planted by tests/plants" and entry["component"] == "user or plugin code"
    # the same report, gated offline: report directory or report.json
    for target in (out, out / "report.json"):
        gated = run_tracer("gate", str(target), "--baseline", str(baseline))
        assert gated.returncode == 0 and "accepted by the baseline" in gated.stdout, gated.stdout + gated.stderr
    assert run_tracer("gate", str(out)).returncode == 1
    assert run_tracer("gate", str(out), "--max-leak-per-round", "64 MiB").returncode == 0
    assert run_tracer("gate", str(out), "--max-leak-per-round", "1 MiB").returncode == 1
    # a new run of the planted leak, gated against the baseline in one step: the id is stable across runs
    again = run_tracer("diff", "--gate", "--baseline", str(baseline), "--preload", PLANT, "--out", str(tmp_path / "r"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "tracer gate: PASS" in again.stdout and entry["id"] in again.stdout
