"""The planted-leak suite: leaks modeled on real vLLM bugs, run on the real vLLM CPU
engine through `tracer diff --preload PLANT.py`, one run of 6 measured rounds per plant.

Every plant wraps a real vLLM function (the planting function, so it is on the allocation stack as a caller) and
keeps a reference to memory vLLM itself allocated in a module-level container, as the real bugs did; the native
plant leaks malloc'd bytes per kernel call instead. For each: the verdict is "leak", the planted group is the top
leak (most bytes among leaks), its stack holds the planting function, its component is vLLM's, and its live bytes
grow every round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PLANTS, load_report, run_tracer

pytestmark = pytest.mark.engine

ROUNDS = 6


@dataclass(frozen=True)
class Plant:
    stem: str  # file stem in tests/plants/ = the module name the preload gets = the root of its holder chains
    planter: str  # the wrapper around vLLM's function: must be on the finding's stack
    component: str
    bug: str
    args: tuple[str, ...] = ()
    python_held: bool = True  # a Python object holds the memory, so a holder chain can name the container

    @property
    def file(self) -> Path:
        return PLANTS / f"{self.stem}.py"


PLANTED = [
    Plant("request_pixel_values", "apply_hf_processor_keeping_pixels", "HF image processing",
          "#12973/#15597: pixel values in a dict keyed by request id, never popped"),
    Plant("count_bounded_cache", "apply_with_count_bounded_cache", "HF image processing",
          "#9190: processed-item cache bounded by 10,000 items instead of bytes"),
    Plant("per_step_logits", "sampler_forward_keeping_logits", "sampler",
          "#44175: a list appended at every step (the sampler's float32 logits)"),
    Plant("encoder_output_refs", "execute_mm_encoder_keeping_outputs", "encoder cache",
          "#12545/#31577: references to encoder outputs kept after the request, by mm hash"),
    Plant("processed_inputs_kept", "process_for_engine_keeping_inputs", "HF image processing",
          "#50860: processed multimodal inputs kept after encoding, beyond the request"),
    Plant("native_string_arg", "cpu_attention_leaking_string_arg", "user or plugin code",
          "#50150: a native malloc per attention-kernel call for its string argument, never freed",
          args=("--native-traces",), python_held=False),
]


@pytest.fixture(scope="module", params=PLANTED, ids=lambda p: p.stem)
def planted(request, tmp_path_factory) -> tuple[Plant, dict]:
    plant: Plant = request.param
    out = tmp_path_factory.mktemp(plant.stem) / "report"
    result = run_tracer("diff", "--rounds", str(ROUNDS), "--out", str(out), "--preload", str(plant.file), *plant.args)
    assert result.returncode == 0, result.stderr[-3000:]
    return plant, load_report(out)


def planter_index(stack: list[dict], plant: Plant) -> int | None:
    """Index of the planting function's frame on a stack (innermost first), or None."""
    return next((i for i, fr in enumerate(stack)
                 if fr["function"] == plant.planter and fr["file"].endswith(plant.file.name)), None)


def planted_finding(report: dict, plant: Plant) -> dict:
    """The biggest finding whose stack holds the planting function."""
    mine = [f for f in report["findings"] if planter_index(f["stack"], plant) is not None]
    assert mine, f"no finding has {plant.planter} on its stack: {describe(report)}"
    return max(mine, key=lambda f: f["bytes"])


def describe(report: dict, n: int = 6) -> list[str]:
    return [f"{f['verdict']} {f['component']} {f['bytes']} {f['per_round_bytes']} {f['owner']}"
            for f in report["findings"][:n]]


def check_holders(finding: dict, plant: Plant) -> None:
    """tracer names the holders (`details.holders`, e.g. "request_pixel_values._by_request['3']"); one of them
    must start at the plant's module (its file stem)."""
    holders = finding.get("details", {}).get("holders")
    assert holders, finding.get("details")
    assert any(h == plant.stem or h.startswith((plant.stem + ".", plant.stem + "[")) for h in holders), holders


def test_planted_leak_is_the_top_leak(planted):
    plant, report = planted
    assert report["status"] == "complete"
    assert report["verdict"] == "leak", describe(report)
    finding = planted_finding(report, plant)
    assert finding["verdict"] == "leak", (finding["details"], describe(report))
    leaks = [f for f in report["findings"] if f["verdict"] == "leak"]
    top = max(leaks, key=lambda f: f["bytes"])
    assert top["id"] == finding["id"], describe(report)


def test_planted_leak_has_the_planter_component_and_growth(planted):
    plant, report = planted
    finding = planted_finding(report, plant)
    assert finding["component"] == plant.component, (finding["component"], finding["stack"][:12])
    series = finding["per_round_bytes"]
    assert len(series) == ROUNDS and all(b > a for a, b in zip(series, series[1:])), series
    assert finding["bytes"] >= 256 * 1024 and (series[-1] - series[0]) / (ROUNDS - 1) >= 64 * 1024, series


def test_planted_leak_is_held_by_the_plant_or_native(planted):
    """Python-held plants: the holder chain starts at the plant's container. The native
    plant: its stack shows the native allocation chain (the ctypes call into the allocator) inside the planting
    function, and it grows by whole 4096-byte buffers."""
    plant, report = planted
    finding = planted_finding(report, plant)
    if plant.python_held:
        check_holders(finding, plant)
        return
    stack = finding["stack"]
    i = planter_index(stack, plant)
    native = stack[:i]
    assert native and not any(fr["file"].endswith(".py") for fr in native), stack[: i + 1]
    assert {"_ctypes_callproc", "PyCFuncPtr_call"} & {fr["function"] for fr in native}, stack[: i + 1]
    series = finding["per_round_bytes"]
    assert all((b - a) % 4096 == 0 for a, b in zip([0] + series, series)), series


def test_vllm_caches_stay_caches_next_to_the_plant(planted):
    """The plants' containers (a count-bounded cache among them) survive the drain and grow: leaks. vLLM's own
    encoder cache in the same run, emptied by reset_encoder_cache, is still reported as a cache - except where the
    plant itself holds the encoder outputs, and that finding is the leak, labelled encoder cache; likewise the
    processor cache, emptied by reset_mm_cache."""
    plant, report = planted
    finding = planted_finding(report, plant)
    assert finding["verdict"] == "leak"
    caches = [f for f in report["findings"] if f["verdict"] == "cache"]
    encoder_cache = [f for f in caches if f["component"] == "encoder cache" and f["details"].get("undrained_bytes")]
    if plant.stem == "encoder_output_refs":
        assert finding["component"] == "encoder cache" and not encoder_cache, describe(report, 10)
    else:
        assert encoder_cache, describe(report, 10)
    # vLLM's multimodal processor cache keeps every round's pixel values until reset_mm_cache: a cache, unless
    # the plant itself keeps the processor's outputs (then that finding is the leak)
    processor_cache = [f for f in caches if f["component"] == "HF image processing"
                       and f["details"].get("undrained_bytes", 0) >= ROUNDS * report["run"]["batch"] * 576 * 1536]
    if plant.component == "HF image processing":
        assert finding["component"] == "HF image processing", describe(report, 10)
    else:
        assert processor_cache, describe(report, 10)
        assert all(f["details"]["released_by"].get("mm_cache", 0) > 0 for f in processor_cache), [
            f["details"]["released_by"] for f in processor_cache]
