"""Shared helpers: run the `tracer` CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
PLANTS = Path(__file__).resolve().parent / "plants"
SERVE_ROUNDS = 4
TAG = "TRACER_TEST_RUN"  # in the environment of every process of a `tracer diff --serve` run started by a test


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a CUDA device; without one they are skipped, saying so."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def tracer_env() -> dict:
    env = dict(os.environ)
    paths = [str(ROOT / "envfix"), str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def run_tracer(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, cwd=cwd,
                          env=tracer_env(), timeout=timeout)


def assert_usage_error(result, *needles, alone=True):
    """The error is the last line on stderr, the only one of its kind (and the only line at all if `alone`:
    checks that need vLLM imported let vLLM's import-time notices come first)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("tracer: error: "), result.stderr
    assert sum("error" in line.lower() for line in lines) == 1, result.stderr
    if alone:
        assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[-1]


def external_resources(html: str) -> list[str]:
    """Scripts, styles or images the page would fetch from the network (a self-contained page has none)."""
    return re.findall(r"""<(?:script|link|img|iframe)[^>]+(?:src|href)=["']?((?:https?:)?//[^"' >]+)""", html)


def flame_frames(html: str, domain: str) -> dict[str, int]:
    """Frame name -> bytes of every frame report.html's flamegraph of `domain` draws (from the page's data)."""
    data = json.loads(html.split('<script id="chart-data" type="application/json">')[1].split("</script>")[0])
    out: dict[str, int] = {}
    todo = [data["flames"][domain]]
    while todo:
        node = todo.pop()
        out[node["name"]] = out.get(node["name"], 0) + node["value"]
        todo += node["children"]
    return out


def load_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One clean `tracer diff` on the tiny model, shared by the tests that read its report."""
    out = tmp_path_factory.mktemp("clean") / "report"
    result = run_tracer("diff", "--rounds", "4", "--out", str(out), "--json")
    return out, result


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("planted") / "report"
    result = run_tracer("diff", "--rounds", "6", "--out", str(out), "--preload", str(PLANTS / "host_image_bytes.py"))
    return out, result


def tagged_env() -> tuple[dict, str]:
    tag = uuid.uuid4().hex
    return {**tracer_env(), TAG: tag}, tag


def processes_tagged(tag: str) -> list[int]:
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag:
                out.append(proc.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


def run_serve(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`tracer diff --serve ARGS`, with a tag every process of the server inherits; asserts that no process of
    the run is left."""
    env, tag = tagged_env()
    result = subprocess.run([sys.executable, "-m", "tracer", "diff", "--serve", *args], capture_output=True,
                            text=True, env=env, timeout=timeout, cwd=ROOT)
    time.sleep(1)
    assert processes_tagged(tag) == [], f"orphans left: {processes_tagged(tag)}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="session")
def planted_serve_run(tmp_path_factory):
    """`planted_serve_run(plant, role)`: a server run with `tests/plants/<plant>.py` preloaded in `role`, run once
    per session and shared by the tests that read its report (serve runs start several processes: minutes)."""
    runs: dict[tuple[str, str], tuple[Path, subprocess.CompletedProcess]] = {}

    def run(plant: str, role: str) -> tuple[Path, subprocess.CompletedProcess]:
        if (plant, role) not in runs:
            out = tmp_path_factory.mktemp(f"serve-{plant}") / "report"
            runs[plant, role] = out, run_serve("--rounds", str(SERVE_ROUNDS), "--out", str(out),
                                               "--preload", str(PLANTS / f"{plant}.py"), "--preload-in", role)
        return runs[plant, role]

    return run
