"""The CI gate and baselines: pure logic on handmade reports, stable fingerprints, and the `tracer gate` /
`tracer baseline` commands on handmade reports (the gate on real runs: tests/engine/test_gate_runs.py)."""

from __future__ import annotations

import io
import json
from xml.etree import ElementTree as ET

import pytest

from conftest import assert_usage_error, run_tracer
from tracer.output.gate.baseline import DEFAULT_REASON, SCHEMA as BASELINE_SCHEMA, build_baseline, load_baseline, write_baseline
from tracer.errors import UsageError
from tracer.output.gate.evaluate import OFFENDING, WITHIN, evaluate
from tracer.output.gate.formats import emit
from tracer.output.gate.formats.github import render_github
from tracer.output.gate.formats.junit import render_junit
from tracer.output.gate.formats.markdown import render_markdown
from tracer.output.gate.formats.text import render_text
from tracer.output.report_file import bytes_per_round, load_report as read_report, validate_report
from tracer.analysis.stacks import Frame, fingerprint, module_key

MiB = 1 << 20
KiB = 1 << 10
SITE = "/home/ci/.venv/lib/python3.11/site-packages"
PLANT_STACK = [  # innermost first: two plumbing frames, then the owner and its callers
    {"function": "c10::alloc_cpu", "file": "", "line": 0},
    {"function": "empty", "file": f"{SITE}/torch/_refs/__init__.py", "line": 10},
    {"function": "remember_images", "file": "/repo/tests/plants/host_image_bytes.py", "line": 14},
    {"function": "chat", "file": "/repo/tests/plants/host_image_bytes.py", "line": 18},
    {"function": "run_round", "file": "/repo/tracer/workload.py", "line": 132},
    {"function": "one_round", "file": "/repo/tracer/session.py", "line": 138},
]


def finding(fid: str, verdict: str = "leak", per_round: int = 2 * MiB, rounds: int = 4, component: str = "user code",
            series: list[int] | None = None, stack: list[dict] | None = None, domain: str = "host") -> dict:
    series = [per_round * (k + 1) for k in range(rounds)] if series is None else series
    total = series[-1] if series else per_round * rounds
    return {"id": fid, "domain": domain, "bytes": total, "count": rounds, "per_round_bytes": series,
            "stack": PLANT_STACK if stack is None else stack, "owner": None, "component": component,
            "verdict": verdict, "details": {"reason": "handmade"}}


def report(*findings: dict, rounds: int = 4, verdict: str | None = None, status: str = "complete") -> dict:
    leaky = any(f["verdict"] == "leak" for f in findings)
    return {"schema": "tracer.report/1", "status": status, "error": None,
            "verdict": verdict or ("leak" if leaky else "clean"),
            "run": {"rounds": rounds, "command": "tracer diff", "model": "tiny"},
            "rounds": [{"index": 0, "phase": "warmup"}] + [{"index": k + 1, "phase": "measured"} for k in range(rounds)],
            "findings": list(findings)}


# --- the gate's logic ----------------------------------------------------------------------------------------

def test_without_limits_any_new_leak_fails_and_other_verdicts_never_do():
    r = report(finding("h1", per_round=100 * KiB), finding("h2", "cache", per_round=50 * MiB),
               finding("h3", "transient", per_round=50 * MiB))
    result = evaluate(r)
    assert [c.id for c in result.offenders] == ["h1"] and not result.passed and result.exit_code == 1
    assert evaluate(report(finding("h2", "cache"), finding("h3", "transient"))).exit_code == 0


@pytest.mark.parametrize("per_round, limit, total_limit, status", [
    (2 * MiB, 1 * MiB, None, OFFENDING),
    (512 * KiB, 1 * MiB, None, WITHIN),
    (1 * MiB, 1 * MiB, None, WITHIN),  # at the limit is not over it
    (512 * KiB, None, 1 * MiB, OFFENDING),  # 2 MiB live at the end > 1 MiB
    (512 * KiB, None, 4 * MiB, WITHIN),
    (512 * KiB, 1 * MiB, 1 * MiB, OFFENDING),  # either limit is enough to fail
])
def test_limits(per_round, limit, total_limit, status):
    result = evaluate(report(finding("h1", per_round=per_round)), max_leak_per_round=limit, max_leak=total_limit)
    (checked,) = result.checked
    assert checked.status == status and result.passed == (status != OFFENDING)


def test_bytes_per_round_is_robust():
    assert bytes_per_round({"bytes": 0, "per_round_bytes": [MiB, 3 * MiB, 5 * MiB]}) == 2 * MiB
    assert bytes_per_round({"bytes": 0, "per_round_bytes": [7 * MiB, 7 * MiB]}) == 0  # flat: no growth
    assert bytes_per_round({"bytes": 0, "per_round_bytes": [3 * MiB]}) == 3 * MiB
    assert bytes_per_round({"bytes": 8 * MiB, "per_round_bytes": []}, rounds=4) == 2 * MiB  # GPU, no series
    assert bytes_per_round({"bytes": 8 * MiB}, rounds=0) == 8 * MiB
    # the report's measured rounds spread a series-less finding
    r = report(finding("g1", series=[], per_round=MiB, rounds=8, domain="gpu"), rounds=8)
    (checked,) = evaluate(r, max_leak_per_round=MiB // 2).checked
    assert checked.per_round == MiB and checked.status == OFFENDING


def test_baseline_accepts_by_id_and_reports_stale_entries():
    r = report(finding("h1"), finding("h2"))
    baseline = build_baseline(report(finding("h1"), finding("h9")), reason="known: tokenizer cache")
    result = evaluate(r, baseline, baseline_source="b.json")
    assert [c.id for c in result.accepted] == ["h1"] and [c.id for c in result.offenders] == ["h2"]
    assert [e["id"] for e in result.stale] == ["h9"]
    assert "known: tokenizer cache" in result.accepted[0].why
    assert evaluate(report(finding("h1")), baseline).passed


def test_inconclusive_report_fails_and_partial_report_is_noted():
    result = evaluate(report(verdict="inconclusive", status="partial", rounds=0))
    assert not result.passed and "inconclusive" in result.problem
    partial = evaluate(report(finding("h1", "cache"), status="partial"))
    assert partial.passed and any("partial" in n for n in partial.notes)


@pytest.mark.parametrize("bad, needle", [
    ([], "not a tracer report"),
    ({"schema": "tracer.report/0", "findings": []}, "schema"),
    ({"schema": "tracer.report/1"}, "no findings"),
    ({"schema": "tracer.report/1", "findings": [{"verdict": "leak", "bytes": 1}]}, "no id"),
    ({"schema": "tracer.report/1", "findings": [{"id": "h1", "verdict": "leak"}]}, "no bytes"),
    ({"schema": "tracer.report/1", "findings": [{"id": "h1", "verdict": "leak", "bytes": 1,
                                                 "per_round_bytes": ["x"]}]}, "per_round_bytes"),
])
def test_bad_reports_are_one_line_usage_errors(bad, needle):
    with pytest.raises(UsageError) as err:
        validate_report(bad, "r.json")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_report_path_may_be_the_directory_or_the_file(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(report(finding("h1"))))
    assert read_report(tmp_path) == read_report(tmp_path / "report.json")
    with pytest.raises(UsageError, match="no such file"):
        read_report(tmp_path / "missing")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        read_report(tmp_path / "broken.json")


# --- baselines -------------------------------------------------------------------------------------------------

def test_baseline_records_leak_findings_with_reasons(tmp_path):
    r = report(finding("h1", component="user or plugin code"), finding("h2", "cache"))
    b = build_baseline(r, reason="planted in tests", source="r.json")
    assert b["schema"] == BASELINE_SCHEMA and [e["id"] for e in b["accepted"]] == ["h1"]
    (entry,) = b["accepted"]
    assert entry["reason"] == "planted in tests" and entry["component"] == "user or plugin code"
    assert entry["bytes"] == 8 * MiB and entry["bytes_per_round"] == 2 * MiB
    assert entry["owner"].startswith("remember_images") and len(entry["frames"]) == 3
    assert build_baseline(r)["accepted"][0]["reason"] == DEFAULT_REASON
    merged = build_baseline(report(finding("h1"), finding("h3")), reason="new", previous=b)
    assert {e["id"]: e["reason"] for e in merged["accepted"]} == {"h1": "planted in tests", "h3": "new"}
    write_baseline(tmp_path / "b.json", merged)
    assert load_baseline(tmp_path / "b.json")["accepted"] == merged["accepted"]


@pytest.mark.parametrize("content, needle", [
    (None, "no such file"),
    ("{", "not valid JSON"),
    ("[]", "not a tracer baseline"),
    ('{"schema": "tracer.baseline/0", "accepted": []}', "schema"),
    ('{"schema": "tracer.baseline/1"}', "'accepted' must be a list"),
    ('{"schema": "tracer.baseline/1", "accepted": [{"reason": "x"}]}', "no id"),
    ('{"schema": "tracer.baseline/1", "accepted": [{"id": "h1", "reason": 3}]}', "not text"),
])
def test_bad_baselines_are_one_line_usage_errors(tmp_path, content, needle):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError) as err:
        load_baseline(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


# --- renderers ---------------------------------------------------------------------------------------------------

def failing_result():
    r = report(finding("h1", component="user or plugin code"), finding("h2", per_round=100 * KiB),
               finding("h3", per_round=5 * MiB))
    return evaluate(r, build_baseline(report(finding("h3")), reason="known"), max_leak_per_round=MiB,
                    source="out/report.json", baseline_source="b.json")


def test_text_names_component_bytes_per_round_and_top_three_frames_from_the_owner():
    text = render_text(failing_result())
    assert text.startswith("tracer gate: FAIL: 1 new leak finding over the limits")
    assert "h1 host, user or plugin code: 2.00 MiB/round, 8.00 MiB live at the end" in text
    assert "-> remember_images  tests/plants/host_image_bytes.py:14" in text
    assert "chat  tests/plants/host_image_bytes.py:18" in text and "run_round  tracer/workload.py:132" in text
    assert "one_round" not in text and "c10::alloc_cpu" not in text  # 3 frames, from the owner outwards
    assert "under the limits: h2" in text and "accepted by the baseline: h3" in text and "(known)" in text


def test_github_annotations_and_step_summary(tmp_path):
    result = failing_result()
    lines = render_github(result, workspace="/repo").splitlines()
    (error,) = [line for line in lines if line.startswith("::error")]
    assert error.startswith("::error file=tests/plants/host_image_bytes.py,line=14,title=tracer gate%3A new leak in "
                            "user or plugin code::h1 host")
    assert "%0A-> remember_images" in error and "\n" not in error
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    out = io.StringIO()
    written = emit(result, "github", out=out, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert written == [summary] and "::error" in out.getvalue()
    md = summary.read_text()
    assert md.startswith("earlier step\n### tracer gate: FAIL") and "| `h1` | host | user or plugin code |" in md
    passing = evaluate(report(finding("h1", "cache")))
    assert render_github(passing).startswith("::notice title=tracer gate::tracer gate: PASS")
    assert emit(passing, "github", out=io.StringIO(), env={}) == []  # no summary file outside Actions


def test_junit_is_one_case_per_leak_plus_the_gate(tmp_path):
    root = ET.fromstring(render_junit(failing_result()))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name").split()[0] for c in cases] == ["h1", "h2", "h3", "gate"]
    assert suite.get("tests") == "4" and suite.get("failures") == "2" and suite.get("skipped") == "1"
    assert cases[0].find("failure").get("type") == "leak" and "remember_images" in cases[0].find("failure").text
    assert cases[1].find("failure") is None and cases[2].find("skipped") is not None
    assert cases[3].find("failure") is not None
    path = tmp_path / "sub" / "gate.xml"
    emit(failing_result(), "junit", out=io.StringIO(), junit_file=path)
    assert ET.parse(path).getroot().find("testsuite").get("failures") == "2"


def test_markdown_table_and_stacks():
    md = render_markdown(failing_result())
    assert md.startswith("### tracer gate: FAIL") and "| `h1` | host | user or plugin code | 2.00 MiB |" in md
    assert "#### `h1` user or plugin code" in md and "-> remember_images" in md


# --- stable fingerprints -----------------------------------------------------------------------------------------

def frames(lines: tuple[int, ...], root: str = "/work/main", site: str = SITE, owner: str = "remember_images"):
    return (Frame("tobytes", f"{site}/PIL/Image.py", lines[0]),
            Frame(owner, f"{root}/tests/plants/host_image_bytes.py", lines[1]),
            Frame("chat", f"{root}/tests/plants/host_image_bytes.py", lines[2]),
            Frame("run_round", f"{root}/tracer/workload.py", lines[3]),
            Frame("bootstrap", "/usr/lib/python3.11/threading.py", lines[4]))


def test_fingerprint_survives_line_shifts_checkouts_and_installs():
    fid = fingerprint("host", frames((905, 14, 18, 132, 1000)))
    assert fingerprint("host", frames((911, 40, 52, 150, 1012))) == fid  # lines moved
    assert fingerprint("host", frames((905, 14, 18, 132, 1000), root="/home/runner/work/tracer/tracer",
                                      site="/opt/venv/lib/python3.12/site-packages")) == fid  # another machine
    moved = frames((905, 14, 18, 132, 1000))[:4] + (Frame("bootstrap", "/opt/py/lib/python3.12/threading.py", 7),)
    assert fingerprint("host", moved) == fid  # another Python
    assert fingerprint("host", frames((905, 14, 18, 132, 1000), owner="keep_images")) != fid  # another function
    assert fingerprint("gpu", frames((905, 14, 18, 132, 1000))) != fid
    assert module_key("/x/site-packages/vllm/v1/request.py") == "vllm/v1/request.py"
    assert module_key("/home/runner/work/tracer/tracer/tracer/session.py") == "tracer/session.py"
    assert module_key("/src/vllm/vllm/v1/core/sched/scheduler.py") == "vllm/v1/core/sched/scheduler.py"


# --- on the real engine ----------------------------------------------------------------------------------------


def test_gate_and_baseline_commands_on_handmade_reports(tmp_path):
    (tmp_path / "leaky").mkdir()
    (tmp_path / "leaky" / "report.json").write_text(json.dumps(report(finding("h1", component="user or plugin code"))))
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "report.json").write_text(json.dumps(report(finding("h2", "cache"))))
    assert run_tracer("gate", str(tmp_path / "clean")).returncode == 0
    failed = run_tracer("gate", str(tmp_path / "leaky"))
    assert failed.returncode == 1 and "h1 host, user or plugin code: 2.00 MiB/round" in failed.stdout
    made = run_tracer("baseline", str(tmp_path / "leaky"), "-o", str(tmp_path / "b.json"))
    assert made.returncode == 0 and "1 accepted leak finding" in made.stdout
    assert run_tracer("gate", str(tmp_path / "leaky"), "--baseline", str(tmp_path / "b.json")).returncode == 0
    assert_usage_error(run_tracer("gate", str(tmp_path / "nope")), "nope")
    assert_usage_error(run_tracer("gate", str(tmp_path)), "no such file")
    assert_usage_error(run_tracer("gate", str(tmp_path / "leaky"), "--max-leak-per-round", "-1"), "-1")
    assert_usage_error(run_tracer("baseline", str(tmp_path / "leaky")), "-o")
    junit = run_tracer("gate", str(tmp_path / "leaky"), "--format", "junit", cwd=tmp_path)
    assert junit.returncode == 1 and (tmp_path / "tracer-gate.xml").exists()


def test_baseline_merge_from_the_command_line(tmp_path):
    """`tracer baseline --merge` keeps the entries already in the file, with their reasons; without it the file is
    replaced. Each report lands in the gate's view accordingly."""
    for name, fid in (("first", "h1"), ("second", "h2")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report(finding(fid), finding("h0", "cache"))))
    out = str(tmp_path / "b.json")
    assert run_tracer("baseline", str(tmp_path / "first"), "-o", out, "--reason", "first reason").returncode == 0
    merged = run_tracer("baseline", str(tmp_path / "second"), "-o", out, "--merge", "--reason", "second reason")
    assert merged.returncode == 0 and "2 accepted leak finding(s)" in merged.stdout, merged.stdout
    entries = json.loads((tmp_path / "b.json").read_text())["accepted"]
    assert {e["id"]: e["reason"] for e in entries} == {"h1": "first reason", "h2": "second reason"}
    for name in ("first", "second"):
        assert run_tracer("gate", str(tmp_path / name), "--baseline", out).returncode == 0
    replaced = run_tracer("baseline", str(tmp_path / "second"), "-o", out, "--reason", "only")
    assert replaced.returncode == 0 and "1 accepted leak finding(s)" in replaced.stdout
    assert [e["id"] for e in json.loads((tmp_path / "b.json").read_text())["accepted"]] == ["h2"]
    assert run_tracer("gate", str(tmp_path / "first"), "--baseline", out).returncode == 1


@pytest.mark.parametrize("args, needles", [
    (["--gate", "--max-leak-per-round", "lots"], ["lots"]),
    (["--gate", "--max-leak", "1 XB"], ["1 XB"]),
    (["--gate", "--baseline", "/nonexistent/baseline.json"], ["/nonexistent/baseline.json", "no such file"]),
    (["--gate", "--format", "html"], ["html"]),
    (["--baseline", "b.json"], ["--baseline applies only with --gate"]),
])
def test_diff_gate_bad_input_exits_2_before_running(args, needles, tmp_path):
    result = run_tracer("diff", *args, "--out", str(tmp_path / "out"))
    assert_usage_error(result, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ('{"schema": "tracer.report/1", "accepted": []}', "expected 'tracer.baseline/1'"),
    ('{"schema": "tracer.baseline/1", "accepted": [{}]}', "no id"),
])
def test_malformed_baseline_exits_2(content, needle, tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(content)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(json.dumps(report(finding("h1"))))
    for args in (["gate", str(tmp_path / "r"), "--baseline", str(baseline)],
                 ["diff", "--gate", "--baseline", str(baseline), "--out", str(tmp_path / "out")]):
        assert_usage_error(run_tracer(*args), needle)
    assert not (tmp_path / "out").exists()


def test_reference_cycles_fail_the_gate_unless_accepted():
    r = report(finding("h1", "cycle", per_round=1 * MiB), finding("h2", "leak?", per_round=1 * MiB), verdict="leak")
    failed = evaluate(r)
    assert not failed.passed and [c.id for c in failed.offenders] == ["h1"]
    assert "reference cycle" in failed.offenders[0].why
    assert evaluate(r, accept_cycles=True).passed


def test_gate_command_accepts_cycles_on_request(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report(finding("h1", "cycle"), verdict="leak")))
    assert run_tracer("gate", str(path)).returncode == 1
    assert run_tracer("gate", str(path), "--accept-cycles").returncode == 0
