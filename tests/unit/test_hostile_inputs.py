"""The hostile-input corpus (tests/fixtures/hostile/, made by its make.py) and link tricks made here: each one a
regression test. Bad input ends with one line on stderr and exit code 2, runs no code, reads nothing outside the
capture, writes nothing outside the output directory, and prints nothing that acts as a command or markup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tracer_env
from hostile_helpers import (CLEAN_CAPTURE, HOSTILE, INJECTIONS, PLANTED_CAPTURE, assert_clean_exit,
                             assert_inert_markdown, assert_no_injected_command, assert_xml_parses, copy_capture,
                             invoke, rewrite_events, tree)

PICKLES = sorted((HOSTILE / "pickles").iterdir())
GiB = 2**30
# Prints the peak RSS of a tracer command into the file named by TRACER_TEST_RSS, after the command ends. VmHWM is
# this process's own high-water mark; ru_maxrss is not, since Linux carries the parent's peak across exec.
_MEASURED = ("import os, sys\nfrom tracer.cli import run\ntry:\n    run(sys.argv[1:])\nfinally:\n"
             "    hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
             "    open(os.environ['TRACER_TEST_RSS'], 'w').write(str(int(hwm.split()[1]) * 1024))\n")


def run_measured(args: list[str], cwd: Path, **env) -> tuple[subprocess.CompletedProcess, float, int]:
    rss_file = cwd / "rss.txt"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True, cwd=cwd,
                            env={**tracer_env(), "TRACER_TEST_RSS": str(rss_file), **env}, timeout=120)
    return result, time.perf_counter() - start, int(rss_file.read_text())


@pytest.mark.parametrize("path", PICKLES, ids=[p.name for p in PICKLES])
def test_hostile_snapshot_is_refused_in_seconds_under_1_gib(path, tmp_path):
    env = {"TRACER_MAX_INFLATED": "64MiB"} if "gzip_bomb" in path.name else {}
    result, seconds, rss = run_measured(["snapshot-diff", str(path), str(path), "--out", str(tmp_path / "out")],
                                        tmp_path, **env)
    assert result.returncode == 2, (result.stdout, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracer: error: "), result.stderr
    assert not (tmp_path / "tracer-pwned").exists()  # no pickle ran code
    assert seconds < 30 and rss < GiB, (seconds, rss)
    if "gzip_bomb" in path.name:
        assert "inflates past" in lines[0]


def test_gzip_cap_stops_inflating_at_the_limit():
    from tracer.errors import UsageError
    from tracer.safe_files import inflate

    data = (HOSTILE / "pickles" / "gzip_bomb.pickle.gz").read_bytes()
    assert len(inflate(data, "bomb", limit=200 * 2**20)) == 128 * 2**20 + 2
    with pytest.raises(UsageError, match="inflates past 1048576 bytes"):
        inflate(data, "bomb", limit=2**20)


# --- reads stay inside the capture --------------------------------------------------------------------------------

def _point_snapshot_at(capture: Path, target: str) -> None:
    rewrite_events(capture, lambda r: {**r, "file": target} if r.get("type") == "gpu_snapshot" and
                   r.get("mark") == "baseline" else r)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.pickle.gz", "gpu/../../outside.pickle.gz",
                                    "/dev/zero", "gpu/link.pickle.gz", "gpu/fifo.pickle.gz", "linkdir/x.pickle.gz"])
def test_snapshot_paths_in_events_stay_inside_the_capture(target, tmp_path):
    capture = copy_capture(CLEAN_CAPTURE, tmp_path / "report" / "capture")
    secret = tmp_path / "outside.pickle.gz"
    secret.write_bytes((capture / "gpu").iterdir().__next__().read_bytes())
    (capture / "gpu" / "link.pickle.gz").symlink_to(secret)
    os.mkfifo(capture / "gpu" / "fifo.pickle.gz")
    (capture / "linkdir").symlink_to(tmp_path)
    (tmp_path / "x.pickle.gz").write_bytes(secret.read_bytes())
    _point_snapshot_at(capture, target)
    start = time.perf_counter()
    code, out, err = invoke("analyze", str(tmp_path / "report"))
    assert_clean_exit(code, out, err, allowed=(2,))
    assert "root:" not in err and time.perf_counter() - start < 30
    assert not (tmp_path / "report" / "report.json").exists()


@pytest.mark.parametrize("name", ["events.jsonl", "holders.json", "manifest.json", "host.memray"])
def test_capture_files_that_are_links_out_are_refused(name, tmp_path):
    capture = copy_capture(PLANTED_CAPTURE, tmp_path / "cap")
    outside = tmp_path / f"outside-{name}"
    outside.write_bytes((capture / name).read_bytes() if (capture / name).exists() else b"not memray")
    (capture / name).unlink(missing_ok=True)
    (capture / name).symlink_to(outside)
    code, out, err = invoke("analyze", str(capture), "--out", str(tmp_path / "out"))
    assert_clean_exit(code, out, err, allowed=(2,))
    assert "symlink" in err


def test_fifo_events_do_not_hang(tmp_path):
    capture = copy_capture(CLEAN_CAPTURE, tmp_path / "cap")
    (capture / "events.jsonl").unlink()
    os.mkfifo(capture / "events.jsonl")
    code, out, err = invoke("analyze", str(capture), "--out", str(tmp_path / "out"))
    assert_clean_exit(code, out, err, allowed=(2,))
    assert "not a regular file" in err


# --- writes are fresh, and only in the output directory -----------------------------------------------------------

def test_analyze_replaces_planted_links_instead_of_writing_through_them(tmp_path):
    report = tmp_path / "report"
    copy_capture(CLEAN_CAPTURE, report / "capture")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for name in ("summary.md", "report.json", "report.html", "report.json.tmp"):
        (report / name).symlink_to(victim)
    code, out, err = invoke("analyze", str(report))
    assert_clean_exit(code, out, err, allowed=(0,))
    assert victim.read_text() == "keep me"
    for name in ("summary.md", "report.json", "report.html"):
        assert not (report / name).is_symlink() and (report / name).stat().st_size > 0
    json.loads((report / "report.json").read_text())


def test_analyze_of_a_bare_capture_writes_a_new_sibling_not_the_parent(tmp_path):
    capture = copy_capture(CLEAN_CAPTURE, tmp_path / "downloads" / "bugcapture")
    (tmp_path / "downloads" / "bugcapture-report").mkdir()  # taken: the next free name is used
    before = tree(tmp_path / "downloads")
    code, out, err = invoke("analyze", str(capture))
    assert_clean_exit(code, out, err, allowed=(0,))
    new = tmp_path / "downloads" / "bugcapture-report-2"
    assert (new / "report.json").exists() and str(new) in err
    after = {k: v for k, v in tree(tmp_path / "downloads").items() if not k.startswith("bugcapture-report-2")}
    assert after == before


def test_output_directory_that_is_a_link_needs_out(tmp_path):
    real = tmp_path / "real"
    copy_capture(CLEAN_CAPTURE, real / "capture")
    (tmp_path / "link").symlink_to(real)
    code, out, err = invoke("analyze", str(tmp_path / "link"))
    assert_clean_exit(code, out, err, allowed=(2,))
    assert "symlink" in err and not (real / "report.json").exists()
    code, out, err = invoke("analyze", str(real / "capture"), "--out", str(tmp_path / "link"))
    assert_clean_exit(code, out, err, allowed=(0,))
    assert (real / "report.json").exists()


def test_baseline_and_junit_outputs_replace_links(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_injected_report()))
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "baseline.json").symlink_to(victim)
    (tmp_path / "gate.xml").symlink_to(victim)
    assert_clean_exit(*invoke("baseline", str(report), "-o", str(tmp_path / "baseline.json")), allowed=(0,))
    code, out, err = invoke("gate", str(report), "--format", "junit", "--junit-file", str(tmp_path / "gate.xml"))
    assert_clean_exit(code, out, err, allowed=(1,))
    assert victim.read_text() == "keep me"
    assert_xml_parses((tmp_path / "gate.xml").read_bytes())


def test_junit_file_under_a_file_is_bad_input(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_injected_report()))
    (tmp_path / "file").write_text("x")
    code, out, err = invoke("gate", str(report), "--junit-file", str(tmp_path / "file" / "gate.xml"))
    assert_clean_exit(code, out, err, allowed=(2,))


# --- text from inputs is inert ---------------------------------------------------------------------------------

def _injected_report() -> dict:
    """A report whose every text field holds every injection string."""
    text = " ".join(INJECTIONS)
    frame = {"function": text, "file": f"/src/{text}.py", "line": 3}
    finding = {"id": "h" + INJECTIONS[0], "domain": text, "bytes": 3 * 2**20, "count": 1,
               "per_round_bytes": [2**20, 2 * 2**20, 3 * 2**20], "stack": [frame, frame], "owner": frame,
               "component": text, "verdict": "leak", "details": {"reason": text, "holders": [text]}}
    return {"schema": "tracer.report/1", "status": text, "error": text, "verdict": "leak", "run": {"command": text},
            "rounds": [], "growth": {}, "unattributed": [], "vllm_check": {}, "findings": [finding], "notes": [text]}


@pytest.mark.parametrize("fmt", ["text", "github", "junit", "markdown"])
def test_injection_strings_stay_inert_in_every_gate_format(fmt, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_injected_report()))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"schema": "tracer.baseline/1", "accepted": [
        {"id": text, "component": text, "reason": text} for text in INJECTIONS]}))
    summary = tmp_path / "step-summary.md"
    os.environ["GITHUB_STEP_SUMMARY"] = str(summary)
    try:
        code, out, err = invoke("gate", str(report), "--format", fmt, "--baseline", str(baseline),
                                "--junit-file", str(tmp_path / "gate.xml"))
    finally:
        del os.environ["GITHUB_STEP_SUMMARY"]
    assert_clean_exit(code, out, err, allowed=(1,))
    assert_no_injected_command(out + err)
    if fmt == "markdown":
        assert_inert_markdown(out)
    if fmt == "github":
        assert_inert_markdown(summary.read_text())
        assert out.count("::error ") == 1
    assert_xml_parses((tmp_path / "gate.xml").read_bytes())


def test_injection_strings_stay_inert_in_summary_md_and_html(tmp_path):
    capture = copy_capture(PLANTED_CAPTURE, tmp_path / "report" / "capture")
    manifest = json.loads((capture / "manifest.json").read_text())
    text = " ".join(INJECTIONS)
    manifest["error"] = text
    manifest["status"] = "partial"
    manifest["run"].update(model=text, command=text, device=text)
    (capture / "manifest.json").write_text(json.dumps(manifest))
    holders = json.loads((capture / "holders.json").read_text())
    (capture / "holders.json").write_text(json.dumps({k: [text] for k in holders}))
    code, out, err = invoke("analyze", str(tmp_path / "report"))
    assert_clean_exit(code, out, err, allowed=(0,))
    assert_no_injected_command(out + err)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert_inert_markdown(summary)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "<img src=x onerror" not in html


def test_escapers_on_every_injection_string():
    from tracer.text_escape import github_data, inert_lines, md_code, md_fence, md_text, one_line, xml_text

    for s in INJECTIONS:
        assert "\n" not in one_line(s) and "\r" not in one_line(s) and "\u2028" not in one_line(s)
        assert not inert_lines(one_line(s)).lstrip().startswith("::")
        assert "\n" not in github_data(s) and "\r" not in github_data(s)
        assert_inert_markdown(f"| a | b |\n|---|---|\n| {md_text(s)} | {md_code(s, in_table=True)} |\n")
        assert_inert_markdown("\n".join(["text " + md_text(s), *md_fence([s, "``" + s]), md_text(s)]) + "\n",
                              headings=set())
        assert_xml_parses(f"<a b='{xml_text(s).replace('&', '&amp;').replace('<', '&lt;').replace(chr(39), '')}'/>")


# --- numbers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, 10**400, "12"])
def test_reports_with_bad_numbers_never_pass_the_gate(bad, tmp_path):
    report = _injected_report()
    report["findings"][0]["bytes"] = bad
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report) if not isinstance(bad, int) or bad < 10**300
                    else json.dumps(report).replace(json.dumps(str(10**400)), str(10**400)))
    code, out, err = invoke("gate", str(path))
    assert_clean_exit(code, out, err, allowed=(2,))


def test_report_json_is_strict(tmp_path):
    code, out, err = invoke("analyze", str(PLANTED_CAPTURE), "--out", str(tmp_path / "out"))
    assert_clean_exit(code, out, err, allowed=(0,))
    json.loads((tmp_path / "out" / "report.json").read_text(),
               parse_constant=lambda name: pytest.fail(f"report.json holds {name}"))


# --- exit codes ------------------------------------------------------------------------------------------------

def test_internal_error_is_exit_3_with_the_traceback_in_a_log(tmp_path, monkeypatch):
    import tracer.output.gate.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the gate")

    monkeypatch.setattr(tracer.output.gate.evaluate, "evaluate", broken)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_injected_report()))
    code, out, err = invoke("gate", str(report))
    assert code == 3
    (line,) = err.strip().splitlines()
    assert line.startswith("tracer: internal error: RuntimeError: a bug in the gate (traceback in ")
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "a bug in the gate" in log.read_text()
    log.unlink()
