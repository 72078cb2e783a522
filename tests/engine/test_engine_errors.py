"""Engine start errors: the exception's own message and innermost frames, the whole traceback in
capture/engine.log, and "rejected the engine arguments" only for arguments vLLM rejected."""

from __future__ import annotations

import shutil

import pytest

from tracer.workload.engine_errors import EngineStartError, innermost_frames, root_cause
from tracer.workload.models import build_model
from tracer.workload.releases import release_engine_args

from conftest import run_tracer


def _raise_chain():
    def inner():
        raise ValueError("Found 1 <|image_pad|> tokens in the text but no images were passed\nmore detail")

    try:
        inner()
    except ValueError as exc:
        raise RuntimeError("Engine core initialization failed") from exc


def test_root_cause_message_and_innermost_frames():
    with pytest.raises(RuntimeError) as info:
        _raise_chain()
    root = root_cause(info.value)
    assert isinstance(root, ValueError)
    frames = innermost_frames(root)
    assert "test_engine_errors.py:" in frames[0]
    assert frames[0].endswith(" in inner")
    err = EngineStartError(info.value)
    assert err.summary == ("vLLM failed to start: ValueError: Found 1 <|image_pad|> tokens in the text but no "
                           "images were passed")
    assert err.lines[-1] == "  (raised as RuntimeError: Engine core initialization failed)"


def test_release_engine_args():
    assert release_engine_args("0.16.0", cpu=True)["block_size"][0] == 16
    assert "head_dim=64" in release_engine_args("0.16.0", cpu=True)["block_size"][1]
    assert release_engine_args("0.16.0", cpu=False) == {}
    assert release_engine_args("0.32.0", cpu=True) == {}
    assert release_engine_args("not a version", cpu=True) == {}


@pytest.mark.engine
def test_arguments_vllm_rejects_are_bad_input(tmp_path):
    result = run_tracer("diff", "--rounds", "1", "--out", str(tmp_path / "r"), "--engine-arg", "dtype=float7")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("tracer: error:")]
    assert len(errors) == 1 and "vLLM rejected the engine arguments: ValidationError" in errors[0]
    assert "dtype" in errors[0]


@pytest.mark.engine
def test_failed_start_names_the_error_and_keeps_the_traceback(tmp_path):
    """A model directory without weights (no dummy loader asked for): vLLM accepts the arguments and fails
    while loading the model."""
    model = tmp_path / "model"
    shutil.copytree(build_model("tiny"), model)
    out = tmp_path / "r"
    result = run_tracer("diff", "--rounds", "1", "--out", str(out), "--model", str(model),
                        "--engine-arg", "max_model_len=4096", "--engine-arg", "enforce_eager=true")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "rejected the engine arguments" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("[tracer] ")]
    start = next(i for i, ln in enumerate(lines) if "vLLM failed to start: RuntimeError: Cannot find any model "
                                                          "weights" in ln)
    frames = lines[start + 1:start + 4]
    assert len(frames) == 3 and all(ln.startswith("[tracer]   at vllm/") and ".py:" in ln and " in " in ln for ln in frames), lines
    log = (out / "capture" / "engine.log").read_text()
    # engine.log holds vLLM's log, then the whole traceback of the failed start
    assert "Traceback (most recent call last):" in log and "Cannot find any model weights" in log.split("Traceback")[-1]
    assert f"{out / 'capture' / 'engine.log'}" in result.stderr
