"""Bad input: one line on stderr, exit code 2, nothing left behind."""

from __future__ import annotations

import pytest

from conftest import assert_usage_error, run_tracer


@pytest.mark.parametrize("args, needles", [
    (["diff", "--engine-arg", "max_model_len"], ["KEY=VALUE"]),
    (["diff", "--preload", "/nonexistent/patch.py"], ["/nonexistent/patch.py"]),
    (["diff", "--images", "sometimes"], ["sometimes"]),
    (["diff", "--rounds", "0"], ["--rounds"]),
    (["diff", "--image-size", "big"], ["--image-size"]),
    (["diff", "--min-leak", "lots"], ["lots"]),
    (["analyze", "/nonexistent/report"], ["/nonexistent/report"]),
])
def test_bad_options(args, needles, tmp_path):
    result = run_tracer(*args, "--out", str(tmp_path / "out"))
    assert_usage_error(result, *needles)
    assert not (tmp_path / "out").exists()


def test_analyze_of_a_directory_that_is_not_a_capture(tmp_path):
    assert_usage_error(run_tracer("analyze", str(tmp_path)), "not a tracer capture")


@pytest.mark.engine
@pytest.mark.parametrize("args, needles", [
    (["--model", "tinyy"], ["tinyy", "tiny, qwen3-vl-4b"]),
    (["--model", "./no/such/model"], ["./no/such/model"]),
    (["--engine-arg", "no_such_option=1"], ["no_such_option"]),
])
def test_bad_model_or_engine_arg(args, needles, tmp_path):
    result = run_tracer("diff", "--rounds", "1", *args, "--out", str(tmp_path / "out"))
    assert_usage_error(result, *needles, alone=False)
    assert not (tmp_path / "out").exists()
