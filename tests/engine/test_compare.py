"""`tracer compare`: matching logic on handmade report dicts; the command on two real runs (a clean one and one
with a planted leak) and on bad input."""

from __future__ import annotations

import json

import pytest

from tracer.output.compare import compare, render
from tracer.errors import UsageError

from conftest import PLANTS, run_tracer

MiB = 2**20


def finding(fid: str, verdict: str, per_round: list[int], domain: str = "host", component: str = "vLLM / x") -> dict:
    return {"id": fid, "domain": domain, "verdict": verdict, "bytes": per_round[-1], "count": 1,
            "per_round_bytes": per_round, "component": component,
            "stack": [{"function": f"make_{fid}", "file": "/x/vllm/thing.py", "line": 10}]}


def report(findings: list[dict], vllm: str = "0.32.0", growth: dict | None = None) -> dict:
    return {"schema": "tracer.report/1", "status": "complete", "verdict": "clean", "findings": findings,
            "run": {"vllm": vllm, "transformers": "5.19.0", "torch": "2.13.0", "rounds": 4},
            "rounds": [{"index": i, "phase": "measured"} for i in range(4)],
            "growth": growth or {"rss_bytes": {"baseline": 0, "end": 5 * MiB, "growth": 5 * MiB,
                                               "growth_after_drain": 4 * MiB}}}


def test_matching_new_gone_grown_verdict_and_same():
    a = report([finding("aaaa", "leak", [1 * MiB, 2 * MiB, 3 * MiB, 4 * MiB]),
                finding("gone", "cache", [MiB, MiB, MiB, MiB]),
                finding("verd", "cache", [MiB, MiB, MiB, MiB]),
                finding("same", "leak", [MiB, 2 * MiB, 3 * MiB, 4 * MiB], domain="gpu"),
                finding("tran", "transient", [0, 0, 0, 100])])
    b = report([finding("aaaa", "leak", [3 * MiB, 6 * MiB, 9 * MiB, 12 * MiB]),
                finding("new1", "leak", [0, 2 * MiB, 4 * MiB, 6 * MiB]),
                finding("verd", "leak", [MiB, 2 * MiB, 3 * MiB, 4 * MiB]),
                finding("same", "leak", [MiB, 2 * MiB, 3 * MiB, 4 * MiB], domain="gpu"),
                finding("tr2", "transient", [0, 0, 0, 100])], vllm="0.25.1")
    c = compare(a, b)
    changes = {m.id: m.change for m in c.matches}
    assert changes == {"aaaa": "grown", "new1": "new", "verd": "verdict", "same": "same", "gone": "gone"}
    grown = next(m for m in c.matches if m.id == "aaaa")
    assert grown.a.per_round == MiB and grown.b.per_round == 3 * MiB
    assert {m.id for m in c.offenders} == {"aaaa", "new1", "verd"}
    assert c.exit_code == 1
    data = json.loads(render(c, "json"))
    assert data["environment"]["vllm"] == {"a": "0.32.0", "b": "0.25.1", "differs": True}
    assert data["environment"]["transformers"]["differs"] is False
    row = next(f for f in data["findings"] if f["id"] == "aaaa")
    assert row["ratio_per_round"] == pytest.approx(3.0) and row["ratio_bytes"] == pytest.approx(3.0)
    assert data["unchanged"] == 1 and data["offenders"] == [m.id for m in c.offenders]


def test_limit_and_noise():
    a = report([finding("leak", "leak", [MiB, 2 * MiB, 3 * MiB, 4 * MiB])])
    # 10% faster: run-to-run noise, not growth
    b = report([finding("leak", "leak", [MiB, 2.1 * MiB, 3.2 * MiB, 4.3 * MiB]),
                finding("slow", "leak", [0, 100 * 1024, 200 * 1024, 300 * 1024])])
    c = compare(a, b)
    assert [m.id for m in c.offenders] == ["slow"]
    assert compare(a, b, max_leak_per_round=MiB).exit_code == 0
    assert compare(a, b, max_leak_per_round=64 * 1024).exit_code == 1


def test_same_domain_and_id_only():
    a = report([finding("x", "leak", [MiB, 2 * MiB, 3 * MiB, 4 * MiB], domain="host")])
    b = report([finding("x", "leak", [MiB, 2 * MiB, 3 * MiB, 4 * MiB], domain="gpu")])
    assert sorted(m.change for m in compare(a, b).matches) == ["gone", "new"]


def test_renderers_name_changes_and_counters():
    a = report([])
    b = report([finding("new1", "leak", [0, 2 * MiB, 4 * MiB, 6 * MiB])], vllm="0.25.1")
    c = compare(a, b, source_a="a/report.json", source_b="b/report.json")
    text = render(c, "text")
    assert text.startswith("tracer compare: FAIL: B has 1 new or grown leak(s)")
    assert "* vllm" in text and "new1 host" in text and "make_new1" in text and "RSS" in text
    md = render(c, "markdown")
    assert "### tracer compare: FAIL" in md and "| vllm **differs** | 0.32.0 | 0.25.1 |" in md
    assert "| `new1` | new | host |" in md and "| RSS | 5.00 MiB | 4.00 MiB |" in md


def test_bad_reports():
    with pytest.raises(UsageError, match="schema"):
        compare(report([]), {**report([]), "schema": "tracer.report/0"})
    with pytest.raises(UsageError, match="no findings"):
        compare({"schema": "tracer.report/1"}, report([]))


# --- the command, on real runs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A clean run and one with a planted leak (pixel values kept per request), 4 rounds each."""
    root = tmp_path_factory.mktemp("compare")
    clean = run_tracer("diff", "--rounds", "4", "--out", str(root / "clean"))
    planted = run_tracer("diff", "--rounds", "4", "--out", str(root / "planted"),
                         "--preload", str(PLANTS / "request_pixel_values.py"))
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert planted.returncode == 0, planted.stderr[-3000:]
    return root / "clean", root / "planted"


@pytest.mark.engine
def test_compare_real_runs_both_ways(two_runs):
    clean, planted = two_runs
    leaks = [f for f in json.loads((planted / "report.json").read_text())["findings"] if f["verdict"] == "leak"]
    leak_ids = {f["id"] for f in leaks}
    assert leak_ids

    forward = run_tracer("compare", str(clean), str(planted / "report.json"), "--format", "json")
    assert forward.returncode == 1, forward.stderr
    data = json.loads(forward.stdout)
    assert set(data["offenders"]) == leak_ids
    assert {f["id"] for f in data["findings"] if f["change"] in ("new", "verdict")} >= leak_ids
    assert data["environment"]["transformers"]["a"] and data["environment"]["vllm"]["differs"] is False

    text = run_tracer("compare", str(clean), str(planted))
    assert text.returncode == 1 and text.stdout.startswith("tracer compare: FAIL")
    for f in leaks:
        assert f"{f['id']} host, {f['component']}" in text.stdout

    backward = run_tracer("compare", str(planted), str(clean), "--format", "markdown")
    assert backward.returncode == 0, backward.stdout
    assert "### tracer compare: PASS" in backward.stdout
    for fid in leak_ids:
        assert f"| `{fid}` | " in backward.stdout  # gone in B, or no longer a leak

    limited = run_tracer("compare", str(clean), str(planted), "--max-leak-per-round", "1 GiB")
    assert limited.returncode == 0, limited.stdout


@pytest.mark.engine
def test_compare_report_with_itself(two_runs):
    _, planted = two_runs
    result = run_tracer("compare", str(planted), str(planted), "--format", "json")
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["findings"] == [] and data["offenders"] == [] and data["unchanged"] > 0
    assert not any(row["differs"] for row in data["environment"].values())


def test_compare_bad_input(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(report([])))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**report([]), "schema": "tracer.report/2"}))
    not_report = tmp_path / "notes.txt"
    not_report.write_text("hello\n")
    cases = [(other, "schema 'tracer.report/2'"), (tmp_path / "missing", "no such file"),
             (not_report, "not valid JSON")]
    for path, message in cases:
        result = run_tracer("compare", str(good), str(path))
        assert result.returncode == 2, (path, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert result.stdout == ""
