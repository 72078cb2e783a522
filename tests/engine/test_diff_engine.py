"""`tracer diff` end to end on a real vLLM CPU engine (tiny Qwen3-VL, dummy weights) and real memray captures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import PLANTS, external_resources, flame_frames, load_report, run_tracer, tracer_env

pytestmark = pytest.mark.engine


def test_clean_run_writes_a_full_report(clean_run):
    out, result = clean_run
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # --json: stdout holds only the report
    assert report == load_report(out) | {"files": report["files"]}
    assert report["schema"] == "tracer.report/1"
    assert report["status"] == "complete"
    run = report["run"]
    assert run["model"] == "tiny" and run["rounds"] == 4 and run["warmup"] == 1 and run["batch"] == 4
    assert run["vllm"] and run["torch"] and run["python"] and run["device"].startswith("cpu")
    assert run["env"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    phases = [r["phase"] for r in report["rounds"]]
    assert phases == ["warmup"] + ["measured"] * 4
    for row in report["rounds"]:
        assert row["seconds"] > 0 and row["rss_bytes"] > 0 and row["uss_bytes"] > 0 and row["maxrss_bytes"] > 0
    assert report["verdict"] == "clean", [f for f in report["findings"] if f["verdict"] == "leak"]
    assert (out / "summary.md").read_text().startswith("# tracer report: CLEAN")
    assert (out / "capture" / "main" / "host.memray").stat().st_size > 0
    for f in report["findings"]:
        assert re.fullmatch(r"h[0-9a-f]{15}", f["id"]) and f["domain"] == "host"
        assert len(f["per_round_bytes"]) == 4 and f["verdict"] in ("cache", "transient")
    assert "progress" not in result.stdout and "round 5/5" in result.stderr  # progress on stderr
    measured = [row for row in report["rounds"] if row["phase"] == "measured"]
    maxrss = measured[-1]["maxrss_bytes"] - measured[0]["maxrss_bytes"]
    assert report["vllm_check"] == {"maxrss_growth": maxrss, "threshold_bytes": 0, "would_fail": maxrss > 0}
    assert isinstance(report["unattributed"], list)
    for row in report["unattributed"]:  # on CPU: only host counters can be unexplained
        assert row["counter"] in report["growth"] and row["unattributed"] == row["growth"] - row["explained"]


def test_report_html_is_self_contained_and_small(clean_run):
    out, _ = clean_run
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and 'id="growth-chart"' in html and 'id="flame-host"' in html
    assert external_resources(html) == []
    assert (out / "report.html").stat().st_size < 1.5 * 2**20
    assert not list(out.glob("*-flamegraph.html"))
    assert load_report(out)["files"]["html"] == "report.html"


# `tracer analyze` as on a machine without vLLM: any import of vllm fails.
WITHOUT_VLLM = """
import importlib.abc, sys

class NoVllm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError(f"vllm is blocked: {name}")
        return None

sys.meta_path.insert(0, NoVllm())
from tracer.cli import run
run(sys.argv[1:])
"""


def test_analyze_rebuilds_the_report_offline(planted_run, tmp_path):
    out, _ = planted_run
    result = subprocess.run([sys.executable, "-c", WITHOUT_VLLM, "analyze", str(out), "--out", str(tmp_path),
                             "--json"], capture_output=True, text=True, env=tracer_env(), timeout=600)
    assert result.returncode == 0, result.stderr
    again, first = json.loads(result.stdout), load_report(out)
    (top,) = [f for f in again["findings"] if f["verdict"] == "leak"]
    assert any(h.startswith("host_image_bytes._stash[") for h in top["details"]["holders"]), top["details"]
    assert again["findings"] == first["findings"]  # holders, cycles and verdicts included
    assert {k: v for k, v in again.items() if k != "files"} == {k: v for k, v in first.items() if k != "files"}
    assert (tmp_path / "summary.md").read_text() == (out / "summary.md").read_text()
    blocked = subprocess.run([sys.executable, "-c", WITHOUT_VLLM.replace("run(sys.argv[1:])", "import vllm")],
                             capture_output=True, text=True, env=tracer_env(), timeout=60)
    assert "vllm is blocked: vllm" in blocked.stderr  # the finder does block vLLM


def test_planted_host_leak_is_the_top_finding(planted_run):
    out, result = planted_run
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    assert report["verdict"] == "leak"
    top = [f for f in report["findings"] if f["domain"] == "host"][0]
    assert top["verdict"] == "leak"
    planter = [fr for fr in top["stack"][:3] if fr["function"] == "remember_images"]
    assert planter and planter[0]["file"].endswith("host_image_bytes.py"), top["stack"][:3]
    assert top["component"] == "user or plugin code"
    series = top["per_round_bytes"]
    assert len(series) == 6 and all(b > a for a, b in zip(series, series[1:])), series
    per_image = 384 * 384 * 3
    assert top["bytes"] >= 6 * 4 * per_image
    assert any(h.startswith("host_image_bytes._stash[") for h in top["details"]["holders"]), top["details"]
    summary = (out / "summary.md").read_text()
    assert "remember_images" in summary and "host_image_bytes.py" in summary
    assert "held by: `host_image_bytes._stash[" in summary
    drawn = flame_frames((out / "report.html").read_text(), "host")
    (planted,) = [size for name, size in drawn.items() if name.startswith("remember_images ")]
    assert planted >= top["bytes"], drawn  # the flamegraph draws the planted function with its bytes


def test_engine_crash_keeps_the_rounds_done(tmp_path):
    out = tmp_path / "crash"
    result = run_tracer("diff", "--rounds", "4", "--out", str(out), "--preload", str(PLANTS / "crash_on_round_3.py"))
    assert result.returncode == 1, result.stderr[-2000:]
    report = load_report(out)
    assert report["status"] == "partial" and "planted engine failure" in report["error"]
    assert [r["phase"] for r in report["rounds"]] == ["warmup", "measured"]
    assert "partial run" in (out / "summary.md").read_text()


def test_ctrl_c_keeps_the_capture_and_writes_a_partial_report(tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "diff", "--rounds", "50", "--out", str(out)],
                            env=tracer_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    events = out / "capture" / "events.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if events.exists() and events.read_text().count('"type": "round"') >= 4:
            break
        if proc.poll() is not None:
            pytest.fail(f"tracer ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    report = load_report(out)
    assert report["status"] == "partial" and "interrupted" in report["error"]
    measured = [r for r in report["rounds"] if r["phase"] == "measured"]
    assert 3 <= len(measured) < 50
    marks = [json.loads(line) for line in events.read_text().splitlines() if '"name": "round"' in line]
    assert len(measured) - 1 <= len(marks) <= len(measured)  # the interrupt may fall between a round and its mark
    assert report["findings"] and all(len(f["per_round_bytes"]) == len(marks) for f in report["findings"])
