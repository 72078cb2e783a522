"""`tracer diff` keeps the rounds it recorded when its own capture does not read back (a tracer bug, exit 3),
and still removes the output of a run whose input the traced session rejected (exit 2)."""

from __future__ import annotations

import pytest

from tracer.capture import CaptureWriter
from tracer.cli import run
from tracer.record import child


def _session_writing(status: str, code: int, smaps_rows: list):
    def session(capture_dir, options, verbose=False):
        writer = CaptureWriter(capture_dir, {"run": {}})
        writer.event("smaps", mark="baseline", index=None, full=True, rows=smaps_rows, gone=[], seconds=0.0)
        writer.finish(status, error="bad --engine-arg" if status == "failed" else None)
        return code
    return session


def test_unreadable_capture_is_kept_as_an_internal_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(child, "check_vllm_installed", lambda: None)
    monkeypatch.setattr(child, "run_session_process", _session_writing("complete", 0, [[0, 4096, "heap", "", -1]]))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        run(["diff", "--rounds", "2", "--out", str(out)])
    assert exit_.value.code == 3
    assert "the capture is kept in" in capsys.readouterr().err
    assert (out / "capture" / "events.jsonl").read_text().count('"smaps"') == 1


def test_rejected_input_leaves_no_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(child, "check_vllm_installed", lambda: None)
    monkeypatch.setattr(child, "run_session_process", _session_writing("failed", 2, []))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        run(["diff", "--rounds", "2", "--out", str(out)])
    assert exit_.value.code == 2
    assert "bad --engine-arg" in capsys.readouterr().err
    assert not out.exists()
