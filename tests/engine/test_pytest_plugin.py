"""The pytest plugin: inner test files run by pytester, round functions traced by real memray in-process."""

from __future__ import annotations

import json
import re
from importlib.metadata import distributions
from pathlib import Path

import pytest

from tracer.output.gate.baseline import build_baseline, write_baseline
from tracer.errors import UsageError
from tracer.pytest_plugin import Settings, make_settings, run_rounds

pytest_plugins = ["pytester"]

LEAKY = '''
import pytest

_kept = []


def keep_a_mebibyte():
    _kept.append(bytearray(1 << 20))


@pytest.mark.tracer_limit_leaks("256 KiB", rounds=6, warmup=1{extra})
def test_leaky_round():
    keep_a_mebibyte()


def test_the_body_ran_once_per_round():
    assert len(_kept) == 7
'''

CLEAN = '''
import pytest

_cache = {}
_calls = []


@pytest.mark.tracer_limit_leaks("256 KiB", rounds=6)
def test_round_that_frees_what_it_allocates():
    _calls.append(1)
    scratch = [bytearray(1 << 20) for _ in range(4)]
    _cache["last"] = bytearray(1 << 20)  # bounded: replaced every round
    del scratch


def test_the_body_ran_once_per_round():
    assert len(_calls) == 7
'''


def failure_text(result) -> str:
    return "\n".join(result.outlines)


def report_dir(result) -> Path:
    (match,) = set(re.findall(r"report: (\S+)/summary\.md", failure_text(result)))  # pytest may repeat it
    return Path(match)


def test_registered_as_a_pytest11_entry_point():
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\ntracer = "tracer.pytest_plugin"\n' in pyproject
    # installed: some distribution named tracer declares it (a stale in-tree egg-info may shadow entry_points())
    declared = [ep.value for dist in distributions() if dist.metadata["Name"] == "tracer"
                for ep in dist.entry_points if ep.group == "pytest11"]
    assert "tracer.pytest_plugin" in declared


def test_leaking_round_fails_with_its_stack(pytester):
    pytester.makepyfile(test_inner=LEAKY.format(extra=""))
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(failed=1, passed=1)
    text = failure_text(result)
    assert ("tracer gate: FAIL: 1 new leak finding over the limits (fail on unexplained RSS per round > 256.0 KiB or "
            "per round > 256.0 KiB)") in text
    assert re.search(r"user or plugin code: 1\.00 MiB/round, 6\.00 MiB live at the end", text), text
    assert re.search(r"-> keep_a_mebibyte +\S*test_inner\.py:\d+\n +test_leaky_round +\S*test_inner\.py:\d+\n", text), text
    report = json.loads((report_dir(result) / "report.json").read_text())
    assert report["verdict"] == "leak" and report["run"]["command"].endswith("test_inner.py::test_leaky_round")
    assert [r["phase"] for r in report["rounds"]] == ["warmup"] + ["measured"] * 6
    assert (report_dir(result) / "summary.md").exists()
    assert (report_dir(result) / "capture" / "main" / "host.memray").exists()


def kept_report(pytester, test_name: str) -> dict:
    """The report a passing marked test leaves in pytest's temporary directory (pytester's basetemp)."""
    (path,) = (pytester.path.parent / "basetemp").glob(f"tracer_{test_name[:33]}[0-9]*/report.json")
    return json.loads(path.read_text())


def test_round_without_a_leak_passes(pytester):
    pytester.makepyfile(test_inner=CLEAN)
    pytester.runpytest("-p", "no:cacheprovider", "--strict-markers").assert_outcomes(passed=2)
    report = kept_report(pytester, "test_round_that_frees_what_it_allocates")
    assert report["verdict"] == "clean" and report["status"] == "complete"
    assert report["run"]["command"].endswith("test_inner.py::test_round_that_frees_what_it_allocates")
    assert [r["phase"] for r in report["rounds"]] == ["warmup"] + ["measured"] * 6
    assert report["findings"], "the rounds allocate: memray saw them"
    assert not [f for f in report["findings"] if f["verdict"] in ("leak", "cycle")]
    mine = [f for f in report["findings"] if f["owner"] and f["owner"]["function"] ==
            "test_round_that_frees_what_it_allocates"]
    assert mine and all(f["verdict"] in ("transient", "cache") and f["bytes"] <= 2 << 20 for f in mine)


def test_in_a_fresh_process_through_the_entry_point(pytester):
    pytester.makepyfile(test_inner=LEAKY.format(extra=""))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    assert re.search(r"^plugins: .*\btracer-", failure_text(result), re.M)  # loaded from the entry point
    assert "keep_a_mebibyte" in failure_text(result)


def test_baseline_accepts_the_leak_across_line_shifts(pytester):
    pytester.makepyfile(test_inner=LEAKY.format(extra=""))
    first = pytester.runpytest("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1, passed=1)
    report = json.loads((report_dir(first) / "report.json").read_text())
    write_baseline(pytester.path / "baseline.json", build_baseline(report, reason="kept on purpose"))
    shifted = "# a comment\n\n\n" + LEAKY.format(extra=', baseline="baseline.json"').replace(
        "def keep_a_mebibyte():\n", "def keep_a_mebibyte():\n    # moved down a line\n")
    pytester.makepyfile(test_inner=shifted)
    second = pytester.runpytest("-p", "no:cacheprovider")
    second.assert_outcomes(passed=2)


def test_fixture_with_a_drain_and_marker_defaults(pytester):
    pytester.makepyfile(test_inner='''
import pytest

_cache = {}


def fill():
    _cache[len(_cache)] = bytearray(1 << 20)


def test_cache_released_by_the_drain(tracer_rounds):
    result = tracer_rounds(fill, rounds=5, drain=_cache.clear)
    assert result.passed and not result.gate.checked
    assert any(f["verdict"] == "cache" for f in result.report["findings"])


@pytest.mark.tracer_limit_leaks("4 MiB", rounds=4)
def test_marker_gives_the_fixture_its_limit(tracer_rounds):
    _cache.clear()
    result = tracer_rounds(fill)
    assert result.passed and [c.status for c in result.gate.checked] == ["under the limits"]
    assert len([r for r in result.report["rounds"] if r["phase"] == "measured"]) == 4


def test_cache_without_a_drain_fails(tracer_rounds):
    _cache.clear()
    tracer_rounds(fill, rounds=5)
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2, failed=1)
    assert "test_cache_without_a_drain_fails FAILED" in failure_text(result)
    assert "-> fill" in failure_text(result)


def test_library_callable_as_the_round_function(pytester):
    """A round function from an installed package, passed directly: its allocations are the workload's, not
    tracer's own, though the only non-library frames on their stacks are tracer's round drivers."""
    lib = pytester.mkdir("site-packages")
    (lib / "fakelib.py").write_text("_kept = []\n\n\ndef grow():\n    _kept.append(bytearray(1 << 20))\n")
    pytester.syspathinsert(lib)
    pytester.makepyfile(test_inner='''
import fakelib


def test_library_round(tracer_rounds):
    tracer_rounds(fakelib.grow, rounds=4)
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert re.search(r"-> grow +fakelib\.py:5", failure_text(result)), failure_text(result)


def test_bad_arguments_and_errors_in_rounds(pytester):
    pytester.makepyfile(test_inner='''
import pytest


@pytest.mark.tracer_limit_leaks("lots")
def test_bad_size():
    pass


@pytest.mark.tracer_limit_leaks(rounds=2, wramup=1)
def test_unknown_argument():
    pass


@pytest.mark.tracer_limit_leaks(rounds=3)
def test_round_raises():
    raise ValueError("boom in the round")


def test_rounds_inside_rounds(tracer_rounds):
    tracer_rounds(lambda: tracer_rounds(lambda: None, rounds=1), rounds=1)


_kept = []


@pytest.mark.tracer_limit_leaks(rounds=5)
def test_tracing_works_again_afterwards():
    _kept.append(bytearray(1 << 20))
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=5)
    text = failure_text(result)
    assert re.search(r"-> test_tracing_works_again_afterwards +\S*test_inner\.py:\d+", text), text
    assert "tracer: tracer_limit_leaks: max_leak_per_round: bad size 'lots'" in text
    assert "unknown argument(s) wramup" in text
    assert "ValueError: boom in the round" in text
    assert "tracer rounds are already running in this process" in text


def test_max_leak_dict_baselines_and_refusal_under_memray(pytester):
    pytester.makepyfile(test_inner='''
import memray
import pytest

from tracer.output.gate.baseline import build_baseline

_kept = []


def keep():
    _kept.append(bytearray(1 << 20))


@pytest.mark.tracer_limit_leaks(max_leak="2 MiB", rounds=6)
def test_over_max_leak():
    keep()


@pytest.mark.tracer_limit_leaks(max_leak="64 MiB", rounds=6)
def test_under_max_leak():
    keep()


def test_dict_baseline_accepts_the_leak(tracer_rounds):
    first = tracer_rounds(keep, "64 MiB", rounds=6)
    (leak,) = [f for f in first.report["findings"] if f["verdict"] == "leak"]
    baseline = build_baseline(first.report, reason="kept on purpose")
    assert leak["id"] in {entry["id"] for entry in baseline["accepted"]}
    second = tracer_rounds(keep, "512 KiB", rounds=6, baseline=baseline)
    assert second.passed and {c.finding["id"]: c.status for c in second.gate.checked}[leak["id"]] == "accepted"


def test_refused_under_another_memray_tracker(tracer_rounds, tmp_path):
    with memray.Tracker(tmp_path / "outer.memray"):
        tracer_rounds(keep, rounds=2)
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(failed=2, passed=2)
    text = failure_text(result)
    assert "test_over_max_leak FAILED" in text and "test_refused_under_another_memray_tracker FAILED" in text
    assert re.search(r"tracer gate: FAIL: \d+ new leak findings? over the limits \(fail on live at the end > 2\.00 MiB\)"
                     r"(.|\n)*-> keep +\S*test_inner\.py:\d+", text), text
    assert "cannot trace: another memray Tracker is active in this process" in text


def test_settings():
    s = make_settings(("1 MiB",), {"rounds": 3})
    assert s.max_leak_per_round == 1 << 20 and s.rounds == 3 and s.warmup == 1
    assert s.thresholds().min_per_round == 64 * 1024  # the limit is above the analysis threshold: kept
    assert make_settings(("16KiB",)).thresholds().min_per_round == 16 * 1024  # below: lowered to the limit
    drain = [].clear
    assert make_settings((), {"rounds": 5}, Settings(drain=drain)).drain is drain
    for args, kwargs in ((("1 MiB", "2 MiB"), {}), (("1 MiB",), {"max_leak_per_round": 1}), ((), {"rounds": 0}),
                         ((), {"warmup": -1}), ((), {"drain": 3}), ((), {"max_leak": "x"})):
        with pytest.raises(UsageError):
            make_settings(args, kwargs)


def test_run_rounds_without_pytest(tmp_path):
    """The library entry point: a plain function, real memray, the same report as `tracer diff` writes."""
    kept = []
    report = run_rounds(lambda: kept.append(bytearray(512 << 10)), tmp_path, Settings(rounds=4, warmup=1))
    assert len(kept) == 5 and report["schema"] == "tracer.report/1" and report["verdict"] == "leak"
    (leak,) = [f for f in report["findings"] if f["verdict"] == "leak"]
    assert leak["owner"]["function"] == "<lambda>" and leak["owner"]["file"] == __file__
    series = leak["per_round_bytes"]
    assert len(series) == 4 and all(b - a >= 512 << 10 for a, b in zip(series, series[1:])), series
