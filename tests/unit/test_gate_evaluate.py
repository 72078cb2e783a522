"""The gate's verdict on handmade reports, word for word: the limits it states, the reason it gives for each
finding, where it draws the line at a limit, and the headline and context lines a CI log shows."""

from __future__ import annotations

import pytest

from report_samples import USER_STACK as STACK
from tracer.errors import UsageError
from tracer.output.gate.evaluate import ACCEPTED, OFFENDING, WITHIN, Checked, Limits, evaluate, is_rss_suspect

MiB = 1 << 20
KiB = 1 << 10


def finding(fid: str, verdict: str = "leak", per_round: int = 2 * MiB, domain: str = "host") -> dict:
    """Four measured rounds growing `per_round` bytes each."""
    series = [per_round * (k + 1) for k in range(4)]
    return {"id": fid, "domain": domain, "bytes": series[-1], "per_round_bytes": series, "stack": STACK,
            "component": "user code", "verdict": verdict, "details": {}}


def report(*findings: dict, **fields) -> dict:
    return {"schema": "tracer.report/1", "verdict": "leak", "run": {"rounds": 4},
            "rounds": [{"phase": "measured"}] * 4, "findings": list(findings), **fields}


def only(result) -> Checked:
    (checked,) = result.checked
    return checked


def test_limits_describe_every_limit_in_words():
    assert Limits().describe() == "fail on any new leak"
    assert Limits(max_leak=4 * MiB).describe() == "fail on live at the end > 4.00 MiB"
    assert Limits(MiB, 4 * MiB, 512 * KiB).describe() == (
        "fail on unexplained RSS per round > 512.0 KiB or per round > 1.00 MiB or live at the end > 4.00 MiB")


def test_limits_are_exceeded_only_past_them():
    limits = Limits(max_leak_per_round=MiB, max_leak=8 * MiB)
    assert limits.exceeded(MiB, 8 * MiB) == []  # at both limits: not over
    assert limits.exceeded(MiB + 1, 8 * MiB + 1) == ["1.00 MiB/round > 1.00 MiB/round", "8.00 MiB live > 8.00 MiB"]
    assert Limits().exceeded(10 * MiB, 100 * MiB) == []


def test_reasons_name_the_kind_and_the_limits_crossed():
    leak, cycle = finding("h1"), finding("h2", "cycle")
    assert [c.why for c in evaluate(report(leak, cycle)).checked] == [
        "new leak (no limit set: any new leak fails)", "new reference cycle (no limit set: any new leak fails)"]
    over = only(evaluate(report(leak), max_leak_per_round=MiB, max_leak=4 * MiB))
    assert over.status == OFFENDING
    assert over.why == "new leak over the limit: 2.00 MiB/round > 1.00 MiB/round; 8.00 MiB live > 4.00 MiB"
    under = only(evaluate(report(leak), max_leak_per_round=4 * MiB))
    assert (under.status, under.why) == (WITHIN, "new leak under the limits")
    at_total = only(evaluate(report(leak), max_leak=8 * MiB))  # 8 MiB live at the end, limit 8 MiB
    assert at_total.status == WITHIN


def test_findings_after_one_the_gate_skips_are_still_checked():
    result = evaluate(report(finding("c1", "cache"), finding("t1", "transient"), finding("h1")))
    assert [c.id for c in result.checked] == ["h1"]


def test_accepted_finding_without_a_reason_says_so():
    baseline = {"schema": "tracer.baseline/1", "accepted": [{"id": "h1"}, {"id": "h2", "reason": "tokenizer"}]}
    result = evaluate(report(finding("h1"), finding("h2")), baseline)
    assert [(c.status, c.why) for c in result.checked] == [
        (ACCEPTED, "accepted by the baseline: no reason given"), (ACCEPTED, "accepted by the baseline: tokenizer")]


def test_rss_suspects_are_gated_on_their_own_per_round_limit():
    suspect = finding("r1", "leak?", domain="rss")
    assert is_rss_suspect(suspect)
    assert not is_rss_suspect(finding("r2", "leak?", domain="host")) and not is_rss_suspect(finding("r3", domain="rss"))
    # no limit at all, or only a limit on live bytes: unexplained RSS growth fails
    for kwargs in ({}, {"max_leak": 100 * MiB}):
        checked = only(evaluate(report(suspect), **kwargs))
        assert checked.status == OFFENDING
        assert checked.why == "RSS growth no allocation explains (no per-round limit set: it fails)"
    # the RSS limit defaults to the per-round limit
    defaulted = evaluate(report(suspect), max_leak_per_round=MiB)
    assert defaulted.limits.max_rss_per_round == MiB
    assert (only(defaulted).status, only(defaulted).why) == (OFFENDING, "new leak over the limit: 2.00 MiB/round > 1.00 MiB/round")
    # an RSS limit of its own overrides it, and at the limit is not over it
    assert only(evaluate(report(suspect), max_leak_per_round=MiB, max_rss_per_round=2 * MiB)).status == WITHIN
    own = evaluate(report(suspect), max_leak_per_round=8 * MiB, max_rss_per_round=MiB)
    assert own.limits.max_rss_per_round == MiB and only(own).status == OFFENDING
    assert only(own).why == "new leak over the limit: 2.00 MiB/round > 1.00 MiB/round"
    # the RSS limit is per round only: a large total does not fail an RSS suspect under it
    assert only(evaluate(report(suspect), max_leak=MiB, max_rss_per_round=4 * MiB)).status == WITHIN


def test_headline_counts_new_leaks_in_words():
    one = evaluate(report(finding("h1")))
    assert one.headline() == "tracer gate: FAIL: 1 new leak finding over the limits (fail on any new leak)"
    two = evaluate(report(finding("h1"), finding("h2")), max_leak_per_round=MiB)
    assert two.headline() == ("tracer gate: FAIL: 2 new leak findings over the limits "
                              "(fail on unexplained RSS per round > 1.00 MiB or per round > 1.00 MiB)")
    clean = evaluate(report(finding("c1", "cache"), verdict="clean"))
    assert clean.headline() == "tracer gate: PASS: no new leak over the limits (fail on any new leak)"


def test_inconclusive_and_partial_reports():
    inconclusive = evaluate(report(verdict="inconclusive"))
    assert inconclusive.problem == ("the report is inconclusive: no measured round was recorded, "
                                    "so nothing can be gated")
    assert inconclusive.headline() == f"tracer gate: FAIL: {inconclusive.problem}"
    died = evaluate(report(status="partial", error="engine died in round 3"))
    assert died.notes == ["partial run (engine died in round 3): gated on the rounds done"]
    assert evaluate(report(status="interrupted")).notes == ["partial run (interrupted): gated on the rounds done"]
    assert evaluate(report()).notes == [] and evaluate(report(status="complete")).notes == []


def test_context_line_names_the_report_the_baseline_and_a_partial_status():
    baseline = {"schema": "tracer.baseline/1", "accepted": [{"id": "h1"}]}
    full = evaluate(report(finding("h1"), finding("h2"), status="partial"), baseline, source="out/report.json",
                    baseline_source="b.json")
    assert (full.source, full.baseline_source) == ("out/report.json", "b.json")
    assert full.context() == ("report out/report.json: verdict leak, 4 measured round(s), partial; "
                              "baseline b.json accepts 1")
    bare = evaluate({"schema": "tracer.report/1", "findings": [], "run": {"rounds": 2}})
    assert bare.context() == "report: verdict ?, 2 measured round(s)"


def test_checked_frames_default_to_three_from_the_owner():
    checked = only(evaluate(report(finding("h1"))))
    assert [f.function for f in checked.frames()] == ["remember_images", "chat", "serve"]
    assert [f.function for f in checked.frames(1)] == ["remember_images"]


@pytest.mark.parametrize("kwargs, message", [
    ({}, "report: no findings list"),
    ({"source": "out/report.json"}, "out/report.json: no findings list"),
])
def test_bad_report_errors_name_the_source(kwargs, message):
    with pytest.raises(UsageError) as err:
        evaluate({"schema": "tracer.report/1"}, **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("kwargs, message", [
    ({}, "baseline baseline: 'accepted' must be a list of findings"),
    ({"baseline_source": "b.json"}, "baseline b.json: 'accepted' must be a list of findings"),
])
def test_bad_baseline_errors_name_the_source(kwargs, message):
    with pytest.raises(UsageError) as err:
        evaluate(report(), {"schema": "tracer.baseline/1"}, **kwargs)
    assert str(err.value) == message
