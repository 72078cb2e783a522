"""The encoder cache checked against vLLM's own bookkeeping, on the real vLLM CPU engine.

With the tiny preset the scheduler's encoder cache holds 4,096 embeddings: 28 images of 144, so in the eighth
measured round it evicts the oldest outputs and tells the model runner to free them. When those free notices are
lost (tests/plants/encoder_cache_lost_frees.py) the runner keeps every output; the drain's encoder-cache reset
still empties it, so only the check of what the runner holds against what the scheduler tracks tells the leak
from the cache. A clean run of the same length evicts too and must hold nothing untracked.
"""

from __future__ import annotations

import json

import pytest

from conftest import PLANTS, load_report, run_tracer

pytestmark = pytest.mark.engine

ROUNDS = 8
IMAGE_BYTES = 144 * 768  # one 384x384 image: 144 embeddings of 768 bytes (128 x 3 with the deepstack layers, bf16)


def describe(report: dict, n: int = 6) -> list[str]:
    return [f"{f['verdict']} {f['component']} {f['bytes']} {f['per_round_bytes']} {f['details'].get('reason')}"
            for f in report["findings"][:n]]


def final_audit(out) -> dict:
    events = [json.loads(line) for line in (out / "capture" / "events.jsonl").read_text().splitlines()]
    (step,) = [e for e in events if e["type"] == "drain_step" and e["when"] == "final" and e["step"] == "encoder_cache"]
    return step["found"]


@pytest.fixture(scope="module", params=["clean", "lost-frees"])
def run(request, tmp_path_factory) -> tuple[str, dict, dict]:
    out = tmp_path_factory.mktemp(request.param) / "report"
    plant = ("--preload", str(PLANTS / "encoder_cache_lost_frees.py")) if request.param == "lost-frees" else ()
    result = run_tracer("diff", "--rounds", str(ROUNDS), "--out", str(out), *plant)
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, load_report(out), final_audit(out)


def test_untracked_entries_are_the_lost_frees_and_none_in_a_clean_run(run):
    kind, report, found = run
    assert found["capacity_embeddings"] == 4096, found
    if kind == "clean":
        assert found["untracked_entries"] == 0 and found["untracked_bytes"] == 0, found
        assert found["entries"] == 4096 // 144 and found["bytes"] == found["entries"] * IMAGE_BYTES, found
    else:
        # 8 rounds of 4 images, none freed: 28 the scheduler still tracks and 4 it evicted in the last round
        assert found["entries"] == ROUNDS * 4 and found["untracked_entries"] == ROUNDS * 4 - 4096 // 144, found
        assert found["untracked_bytes"] == found["untracked_entries"] * IMAGE_BYTES, found


def test_lost_frees_are_a_leak_and_the_clean_encoder_cache_a_cache(run):
    kind, report, found = run
    encoder = [f for f in report["findings"] if f["component"] == "encoder cache"
               and f["details"]["released_by"].get("encoder_cache", 0) >= 256 * 1024]
    assert encoder, describe(report)
    for f in encoder:
        assert f["details"]["encoder_cache_audit"] == found
    if kind == "clean":
        assert report["verdict"] == "clean", describe(report)
        assert all(f["verdict"] == "cache" for f in encoder), describe(report)
    else:
        assert report["verdict"] == "leak", describe(report)
        top = report["findings"][0]
        assert top["verdict"] == "leak" and top["component"] == "encoder cache", describe(report)
        assert "no longer tracks" in top["details"]["reason"], top["details"]["reason"]
