"""`tracer snapshot-diff` on real vLLM snapshots from an H100, and on files that must be refused."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

from conftest import external_resources, flame_frames, run_tracer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gpu"


def test_encoder_cache_growth_on_the_4b_pair(tmp_path):
    result = run_tracer("snapshot-diff", str(FIXTURES / "qwen3vl-4b-dims_stacks-all_round0.pickle.gz"),
                        str(FIXTURES / "qwen3vl-4b-dims_stacks-all_round8.pickle.gz"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["growth"]["allocated_growth"] == report["growth"]["new_bytes"] == 161_439_744
    (top,) = report["findings"]
    assert top["owner"]["function"] == "forward" and top["owner"]["file"].endswith("qwen3_vl.py")
    assert top["component"] == "encoder cache" and top["count"] == 8
    assert any(f["function"] == "embed_multimodal" for f in top["stack"])


def test_readable_output_and_report_files(tmp_path):
    out = tmp_path / "sd"
    result = run_tracer("snapshot-diff", str(FIXTURES / "qwen3vl-tiny_round0.pickle.gz"),
                        str(FIXTURES / "qwen3vl-tiny_round8.pickle.gz"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "encoder cache: forward" in result.stdout and "qwen3_vl.py" in result.stdout
    assert (out / "summary.md").read_text().startswith("# tracer snapshot-diff: 1 group")
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and external_resources(html) == [] and 'id="flame-gpu"' in html
    drawn = flame_frames(html, "gpu")
    (encoder,) = [size for name, size in drawn.items() if name.startswith("embed_multimodal ")]
    assert encoder >= 2**20, drawn  # the encoder cache's blocks, drawn with their bytes


def test_drained_pair_has_nothing_new():
    result = run_tracer("snapshot-diff", str(FIXTURES / "qwen3vl-4b-dims_drained_round0.pickle.gz"),
                        str(FIXTURES / "qwen3vl-4b-dims_drained_round8.pickle.gz"), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["findings"] == []


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    RunsCode.marker = marker
    evil = tmp_path / "evil.pickle.gz"
    with gzip.open(evil, "wb") as fh:
        pickle.dump({"segments": [], "device_traces": [], "x": RunsCode()}, fh)
    result = run_tracer("snapshot-diff", str(evil), str(FIXTURES / "qwen3vl-tiny_round8.pickle.gz"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracer: error: ") and "system" in lines[0]
    assert not marker.exists()


def test_truncated_and_foreign_files_are_refused(tmp_path):
    data = (FIXTURES / "qwen3vl-tiny_round8.pickle.gz").read_bytes()
    cut = tmp_path / "cut.pickle.gz"
    cut.write_bytes(data[: len(data) // 2])
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    for bad in (cut, notes):
        result = run_tracer("snapshot-diff", str(bad), str(FIXTURES / "qwen3vl-tiny_round8.pickle.gz"))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad.name) in lines[0]
