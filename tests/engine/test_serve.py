"""`tracer diff --serve`: a real `vllm serve` of the CPU build on the tiny model, every process traced.

Each test runs the CLI as a user would, with a tag in its environment that every process of the server inherits;
afterwards no process may carry it (no orphans, whatever way the run ended).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import PLANTS, ROOT, SERVE_ROUNDS as ROUNDS, flame_frames, load_report, processes_tagged, tagged_env
from conftest import run_serve as serve
from tracer.output.exports import frame_name, survivors

pytestmark = pytest.mark.engine


def leaks(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["verdict"] == "leak"]


def one_error_line(result, code: int, needle: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("tracer: error: ") and needle in lines[-1], result.stderr[-3000:]
    assert sum(line.startswith("tracer: error: ") for line in lines) == 1


def test_clean_run_has_no_leak_in_any_process(tmp_path):
    out = tmp_path / "report"
    result = serve("--rounds", str(ROUNDS), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    assert report["status"] == "complete", report["error"]
    assert leaks(report) == []
    # The one finding a clean server has: the API server's parsed request bodies (the JSON with the base64
    # images, from starlette's Request.json) stay in reference cycles until a full collection, which vLLM's
    # frozen GC heap makes rare. The collector step of the drain frees all of it. Nothing else may fail.
    failing = [f for f in report["findings"] if f["verdict"] in ("leak", "leak?", "cycle")]
    for f in failing:
        assert f["verdict"] == "cycle" and f["role"] == "api-server", f
        assert any(fr["function"] == "json" and fr["file"].endswith("starlette/requests.py") for fr in f["stack"]), f
        assert f["bytes"] == 0 and f["details"]["released_by"]["gc"] > 0, f
    assert report["verdict"] == ("leak" if failing else "clean")
    assert report["run"]["processes"][:2] == ["api-server", "engine-core"]
    roles = set(report["run"]["processes"])
    assert {f["role"] for f in report["findings"]} <= roles
    measured = [r for r in report["rounds"] if r["phase"] == "measured"]
    assert len(measured) == ROUNDS
    for row in measured:  # counters of every process after every round, and the server's sums
        assert set(row["processes"]) == roles
        assert row["rss_bytes"] == sum(p["rss_bytes"] for p in row["processes"].values())
        assert all(p["heap_bytes"] > 0 and p["uss_bytes"] > 0 for p in row["processes"].values())
    assert report["run"]["missing_drain_steps"] == []
    # CPU workers are traced with native stacks: oneDNN's per-shape kernels are a bounded cache there, not a leak
    streams = json.loads((out / "capture" / "manifest.json").read_text())["streams"]
    assert {s["role"]: s["settings"]["native_traces"] for s in streams if s["backend"] == "memray"} == {
        role: role.startswith("worker-") for role in roles}
    summary = (out / "summary.md").read_text()
    assert "api-server RSS MiB" in summary and "engine-core C heap MiB" in summary


@pytest.mark.parametrize("plant, role, holder", [
    ("serve_image_bytes", "api-server", "serve_image_bytes._kept["),
    ("serve_scheduler_features", "engine-core", "serve_scheduler_features._by_request["),
], ids=["api-server", "engine-core"])
def test_planted_leak_is_found_in_its_process(planted_serve_run, plant, role, holder):
    out, result = planted_serve_run(plant, role)
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    assert report["verdict"] == "leak"
    top = max(leaks(report), key=lambda f: f["bytes"])
    assert top["role"] == role and top["id"].startswith("h")
    per_round = top["per_round_bytes"]
    assert all(b > a for a, b in zip(per_round, per_round[1:])), per_round  # grows every round
    assert any(path.startswith(holder) for path in top["details"]["holders"]), top["details"]
    assert [f["role"] for f in leaks(report)] == [role] * len(leaks(report))  # the plant ran only there
    assert f"### process {role}" in (out / "summary.md").read_text()
    # report.html: one flamegraph per process; the planted role's draws the leak's allocation site with its bytes
    drawn = flame_frames((out / "report.html").read_text(), f"{role}-host")
    ((stack, live),) = survivors([top], "host")
    assert drawn.get(frame_name(stack[-1]), 0) >= live >= top["bytes"], (frame_name(stack[-1]), drawn)


def traced_roles(out) -> set[str]:
    """The processes whose allocations were recorded (a stream each in the capture)."""
    return {s["role"] for s in json.loads((out / "capture" / "manifest.json").read_text())["streams"]}


def test_screen_judges_each_process_of_a_clean_server(tmp_path):
    """Two warmup rounds: the worker's first rounds compile kernels for the batch shapes the server forms."""
    out = tmp_path / "report"
    result = serve("--rounds", str(ROUNDS), "--warmup", "2", "--screen", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    assert report["status"] == "complete" and leaks(report) == []
    screened = report["screen"]["processes"]
    assert list(screened) == report["run"]["processes"]
    for role in ("api-server", "engine-core"):  # the API server's cycle garbage is freed by the drain's collection
        assert not screened[role]["suspect"], screened[role]
        assert screened[role]["reasons"][0].startswith("heap_bytes "), screened[role]
    suspect = {role for role, r in screened.items() if r["suspect"]}
    assert report["screen"]["suspect"] == bool(suspect)
    assert traced_roles(out) == suspect  # only a process that kept growth is traced
    assert {f["role"] for f in report["findings"]} <= suspect
    phases = [r["phase"] for r in report["rounds"]]
    assert phases == ["warmup"] * 2 + ["screen"] * ROUNDS + (["measured"] * ROUNDS if suspect else [])
    assert any(note.startswith("Screening pass (untraced), each process on its own counters") and
               "api-server (not traced)" in note for note in report["notes"]), report["notes"]


def test_screen_traces_the_process_where_a_leak_grows(tmp_path):
    out = tmp_path / "report"
    result = serve("--rounds", str(ROUNDS), "--screen", "--out", str(out), "--preload",
                   str(PLANTS / "serve_scheduler_features.py"), "--preload-in", "engine-core")
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    screened = report["screen"]["processes"]
    assert screened["engine-core"]["suspect"] and "heap_bytes" in screened["engine-core"]["suspects"], screened
    assert not screened["api-server"]["suspect"], screened
    assert "engine-core" in traced_roles(out) and "api-server" not in traced_roles(out)
    top = max(leaks(report), key=lambda f: f["bytes"])
    assert top["role"] == "engine-core"
    assert any(path.startswith("serve_scheduler_features._by_request[") for path in top["details"]["holders"])
    assert all(f["role"] != "api-server" for f in report["findings"])


def test_server_dying_mid_run_gives_partial_report(tmp_path):
    out = tmp_path / "report"
    result = serve("--rounds", str(ROUNDS), "--out", str(out), "--preload", str(PLANTS / "serve_engine_core_dies.py"),
                   "--preload-in", "engine-core")
    assert result.returncode == 1, result.stderr[-3000:]
    report = load_report(out)
    assert report["status"] == "partial" and report["error"]
    assert 1 <= len([r for r in report["rounds"] if r["phase"] == "measured"]) < ROUNDS


def test_ctrl_c_gives_130_and_no_orphans(tmp_path):
    out = tmp_path / "report"
    env, tag = tagged_env()
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "diff", "--serve", "--rounds", "20", "--out", str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    for line in proc.stderr:
        if "(measured)" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=300)[1]
    time.sleep(1)
    assert proc.returncode == 130, rest[-3000:]
    assert processes_tagged(tag) == []
    assert load_report(out)["status"] == "partial"


def test_port_already_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--rounds", "1", "--out", str(tmp_path / "r"), "--port", str(port))
    one_error_line(result, 2, f"--port {port}: already in use")


def test_model_that_fails_to_load(tmp_path):
    model = tmp_path / "broken"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "no_such_model_type", "architectures": ["Nothing"]}')
    result = serve("--rounds", "1", "--out", str(tmp_path / "r"), "--model", str(model))
    one_error_line(result, 2, "vllm serve exited with code")


def test_server_never_healthy_within_start_timeout(tmp_path):
    result = serve("--rounds", "1", "--out", str(tmp_path / "r"), "--start-timeout", "3")
    one_error_line(result, 2, "not healthy within --start-timeout 3 s")
