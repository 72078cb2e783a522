"""Clean runs on the real vLLM CPU engine: fresh and fixed images, vLLM's caches on and off.

No run may report a leak, a reference cycle or a suspected leak (`leak?`). vLLM's caches must show up as caches, with their fill: on this engine (in-process, V1
CPU runner) they are the multimodal processor cache (the pixel values of every processed image, emptied by
`reset_mm_cache`; on by default, off with `mm_processor_cache_gb=0`) and the model runner's encoder cache (the
vision encoder's outputs, emptied by `reset_encoder_cache`; not switched off by either engine argument).
"""

from __future__ import annotations

import pytest

from conftest import load_report, run_tracer

pytestmark = pytest.mark.engine

ROUNDS = 6
CACHES_OFF = ("--engine-arg", "mm_processor_cache_gb=0", "--engine-arg", "enable_prefix_caching=false")
RUNS = [("fresh", True), ("fixed", True), ("fresh", False), ("fixed", False)]


@pytest.fixture(scope="module", params=RUNS, ids=lambda r: f"{r[0]}-caches-{'on' if r[1] else 'off'}")
def clean(request, tmp_path_factory) -> tuple[str, bool, dict]:
    images, caches = request.param
    out = tmp_path_factory.mktemp(f"clean-{images}-{caches}") / "report"
    result = run_tracer("diff", "--rounds", str(ROUNDS), "--images", images, "--out", str(out),
                        *(() if caches else CACHES_OFF))
    assert result.returncode == 0, result.stderr[-3000:]
    return images, caches, load_report(out)


def caches_of(report: dict, component: str) -> list[dict]:
    return [f for f in report["findings"] if f["verdict"] == "cache" and f["component"] == component]


def describe(report: dict, n: int = 8) -> list[str]:
    return [f"{f['verdict']} {f['component']} {f['bytes']} {f['per_round_bytes']} {f['details'].get('reason')}"
            for f in report["findings"][:n]]


def test_no_leak(clean):
    images, caches, report = clean
    assert report["status"] == "complete"
    assert report["run"]["images"] == images
    assert ("mm_processor_cache_gb" in report["run"]["engine_args"]) != caches
    assert [f for f in report["findings"] if f["verdict"] == "leak"] == [], describe(report)
    # nor a reference cycle, nor a suspected leak (growth through a drain step this vLLM lacks)
    assert [f for f in report["findings"] if f["verdict"] in ("cycle", "leak?")] == [], describe(report)
    assert report["verdict"] == "clean"
    assert [f for f in report["findings"] if f["domain"] == "rss"] == [], describe(report)
    assert report["rss"]["after_drain"]["unexplained"] < 2**20, report["rss"]["after_drain"]


def test_vllm_caches_appear_as_caches_with_their_fill(clean):
    images, caches, report = clean
    per_image = 576 * 1536  # pixel values of one 384x384 image for the tiny Qwen3-VL: 576 patches of 1536 bytes
    batch = report["run"]["batch"]
    mm = caches_of(report, "HF image processing")
    if images == "fresh" and caches:
        # the processor cache keeps every round's pixel values until the drain empties it
        assert mm, describe(report)
        fill = max(f["details"]["undrained_bytes"] for f in mm)
        assert fill >= ROUNDS * batch * per_image, describe(report)
        assert "released by the drain" in mm[0]["details"]["reason"]
    else:
        # fixed images are processed once per drain, and caches off keep nothing: no processor-cache fill
        assert mm == [], describe(report)
    if images == "fresh":
        encoder = caches_of(report, "encoder cache")
        assert encoder and max(f["details"]["undrained_bytes"] for f in encoder) >= 256 * 1024, describe(report)


def test_no_torch_compile_label_without_compilation(clean):
    """The tiny model runs with enforce_eager: vLLM's compile decorator only passes the call through to the eager
    forward, so nothing may be put down to torch.compile unless dynamo or inductor frames are on its stack."""
    _, _, report = clean
    assert report["run"]["engine_args"].get("enforce_eager") is True
    for f in report["findings"]:
        if f["component"] == "torch.compile":
            assert any(k in fr["file"] for fr in f["stack"] for k in ("torch/_dynamo/", "torch/_inductor/")), (
                [fr["function"] + "@" + fr["file"] for fr in f["stack"][:20]])
