"""Reference cycles and missing drain steps on the real vLLM CPU engine, through `tracer diff --preload`.

The cycle plant binds every vLLM request into its own block hasher (Request -> partial -> Request) and keeps its
multimodal inputs, as vLLM's request once did, under the engine's frozen GC heap: the pixel values must come out
as verdict `cycle`, top finding, with that cycle as a path. The drain-step plant deletes `reset_encoder_cache`
from vLLM's engine, as older releases lack it: the encoder cache must not become a leak.
"""

from __future__ import annotations

import pytest

from conftest import PLANTS, load_report, run_tracer

pytestmark = pytest.mark.engine

ROUNDS = 6


def describe(report: dict, n: int = 6) -> list[str]:
    return [f"{f['verdict']} {f['component']} {f['bytes']} {f['per_round_bytes']} {f['details'].get('reason')}"
            for f in report["findings"][:n]]


@pytest.fixture(scope="module")
def cycle_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cycle") / "report"
    result = run_tracer("diff", "--rounds", str(ROUNDS), "--out", str(out),
                        "--preload", str(PLANTS / "request_partial_cycle.py"))
    assert result.returncode == 0, result.stderr[-3000:]
    return load_report(out)


def test_request_cycle_is_the_top_finding_with_its_path(cycle_report):
    top = cycle_report["findings"][0]
    assert top["verdict"] == "cycle", describe(cycle_report)
    assert top["component"] == "HF image processing", describe(cycle_report)
    assert top["details"]["released_by"]["gc"] >= 256 * 1024, top["details"]
    cycle = top["details"]["cycle"]
    assert cycle["path"] == "Request.get_hash_new_full_blocks -> partial.args[0] -> Request", cycle
    assert cycle["types"]["Request"] >= 1 and cycle["types"]["Tensor"] >= 1, cycle
    assert any(fr["function"] == "patchify" for fr in top["stack"]), top["stack"][:8]
    assert cycle_report["verdict"] == "leak"
    assert [f for f in cycle_report["findings"] if f["verdict"] == "leak"] == [], describe(cycle_report)


def test_a_cycle_fails_the_gate_unless_accepted(cycle_report, tmp_path):
    import json

    path = tmp_path / "report.json"
    path.write_text(json.dumps(cycle_report))
    assert run_tracer("gate", str(path)).returncode == 1
    assert run_tracer("gate", str(path), "--accept-cycles").returncode == 0


def test_missing_encoder_cache_reset_does_not_make_the_encoder_cache_a_leak(tmp_path):
    out = tmp_path / "report"
    result = run_tracer("diff", "--rounds", str(ROUNDS), "--out", str(out),
                        "--preload", str(PLANTS / "no_encoder_cache_reset.py"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    assert report["run"]["missing_drain_steps"] == ["encoder_cache"], report["run"]
    assert "encoder_cache" not in report["run"]["drain_steps"]
    encoder = [f for f in report["findings"] if f["component"] == "encoder cache"
               and f["details"].get("undrained_bytes", 0) >= 256 * 1024]
    assert encoder, describe(report, 10)
    assert all(f["verdict"] in ("cache", "leak?", "transient") for f in encoder), describe(report, 10)
    for f in encoder:
        assert "encoder_cache" in f["details"]["reason"] and "missing" in f["details"]["reason"], f["details"]
    assert [f for f in report["findings"] if f["verdict"] in ("leak", "cycle")] == [], describe(report, 10)
