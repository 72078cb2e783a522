"""`tracer diff` options on the real vLLM CPU engine, several options per run (each run costs about a minute)."""

from __future__ import annotations

import json

import pytest

from conftest import PLANTS, load_report, run_tracer

pytestmark = pytest.mark.engine

RULES = [{"component": "image stash under test", "file": r"host_image_bytes\.py$", "function": "^remember_images$"}]


@pytest.fixture(scope="module")
def options_run(tmp_path_factory):
    """The planted host leak with the workload, labelling and holder options changed from their defaults."""
    base = tmp_path_factory.mktemp("options")
    (base / "rules.json").write_text(json.dumps(RULES))
    out = base / "report"
    result = run_tracer("diff", "--rounds", "4", "--warmup", "2", "--batch", "2", "--seed", "7", "--image-size",
                        "random", "--native-traces", "--no-holders", "--rules", str(base / "rules.json"),
                        "--preload", str(PLANTS / "host_image_bytes.py"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, load_report(out)


def test_workload_options_reach_the_run(options_run):
    out, report = options_run
    run = report["run"]
    assert (run["warmup"], run["batch"], run["seed"]) == (2, 2, 7)
    manifest = json.loads((out / "capture" / "manifest.json").read_text())
    assert manifest["run"]["image_size"] == "random"
    assert [r["phase"] for r in report["rounds"]] == ["warmup"] * 2 + ["measured"] * 4
    assert run["tracing"]["native_traces"] is True and run["tracing"]["drain"] is True


def test_rules_file_labels_the_planted_leak_and_no_holders_skips_the_search(options_run):
    out, report = options_run
    leaks = [f for f in report["findings"] if f["verdict"] in ("leak", "cycle")]
    assert leaks and {f["component"] for f in leaks} == {"image stash under test"}, [
        (f["component"], f["owner"]) for f in leaks]
    for f in leaks:
        assert "holders" not in f["details"] and "--no-holders" in f["details"]["no_holder"], f["details"]
    assert not (out / "capture" / "holders.json").exists()


def test_native_traces_label_onednn_kernel_caches_and_never_call_them_leaks(options_run):
    """Random image sizes make oneDNN build a kernel per new shape; with native frames those allocations are
    labelled as native kernels and judged a bounded cache, never a leak."""
    _, report = options_run
    native = [f for f in report["findings"] if any(not fr["file"].endswith(".py") for fr in f["stack"])]
    assert native, "--native-traces recorded no native frame"
    kernels = [f for f in report["findings"] if f["component"] == "oneDNN / native kernels"]
    assert kernels, [(f["component"], f["owner"]) for f in report["findings"][:10]]
    assert {f["verdict"] for f in kernels} <= {"cache", "transient"}, [(f["verdict"], f["bytes"]) for f in kernels]


def test_gated_run_exits_3_on_an_engine_crash_and_no_drain_skips_the_drains(tmp_path):
    out = tmp_path / "crash"
    result = run_tracer("diff", "--rounds", "4", "--gate", "--no-drain", "--out", str(out),
                        "--preload", str(PLANTS / "crash_on_round_3.py"))
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert "gate: not evaluated, the run ended early" in result.stderr
    report = load_report(out)
    assert report["status"] == "partial" and "planted engine failure" in report["error"]
    assert report["run"]["tracing"]["drain"] is False
    events = [json.loads(line) for line in (out / "capture" / "events.jsonl").read_text().splitlines()]
    assert [e for e in events if e["type"] == "round"], "no round ran"
    assert not [e for e in events if e["type"] in ("drain", "drain_step")]
