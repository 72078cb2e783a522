"""report.html of a real planted-leak run, rendered by headless Chromium: what a person sees, offline."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from conftest import load_report, run_tracer
from tracer.output.exports import frame_name

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1400, 1000
SPEEDSCOPE_SCHEMA = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "speedscope" / "file-format-schema.json").read_text())

pytestmark = [pytest.mark.engine,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs Debian's chromium)")]


def chromium(page: Path, *args: str, height: int = HEIGHT, net_log: Path | None = None) -> str:
    """Run headless Chromium on a local page with every host name mapped to an unreachable address."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-background-networking", f"--window-size={WIDTH},{height}", "--virtual-time-budget=15000",
           "--host-resolver-rules=MAP * 0.0.0.0",
           *([f"--log-net-log={net_log}"] if net_log else []), *args, page.resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=page.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def page_requests(net_log: Path) -> list[str]:
    """URLs of the network requests the page made (Chromium's own background requests left out)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e["type"] == start
            and e["params"].get("network_isolation_key", "").startswith("file://")
            and not e["params"]["url"].startswith("file:")]


def boxes(dom: str) -> dict[str, list[int]]:
    """Where the page drew each chart, flamegraph and headline element: {id: [x, y, width, height]}."""
    attr = re.search(r'<body[^>]*data-boxes="([^"]*)"', dom)
    assert attr, "the page's script did not run"
    return json.loads(html_lib.unescape(attr.group(1)))


def ink(image: Image.Image, box: list[int]) -> tuple[float, int]:
    """Share of pixels that are not near-white in `box`, and the number of distinct colours there."""
    x, y, w, h = box
    pixels = np.asarray(image.convert("RGB").crop((x, y, x + w, y + h))).reshape(-1, 3)
    return float((pixels.min(axis=1) < 225).mean()), len(np.unique(pixels, axis=0))


def element_text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:span|dd)>', dom, re.S)
    assert match, element_id
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def assert_flamegraph_drawn(page: Path, where: dict, key: str, tmp_path: Path) -> None:
    """The flamegraph `key` is wide, tall and inked when a window tall enough to hold it is shot."""
    x, y, w, h = where[key]
    assert w > 1000 and h > 100, where[key]
    tall = tmp_path / f"{key}.png"
    chromium(page, f"--screenshot={tall}", height=y + h + 40)
    share, colours = ink(Image.open(tall), where[key])
    assert share > 0.3 and colours > 20, (key, share, colours)


def test_network_check_sees_a_page_request(tmp_path):
    """The request check can fail: a page that loads an image from the web shows up in the net log."""
    page = tmp_path / "fetches.html"
    page.write_text('<html><body><img src="http://example.com/x.png"><p>x</p></body></html>')
    chromium(page, "--dump-dom", net_log=tmp_path / "net.json", height=300)
    assert page_requests(tmp_path / "net.json") == ["http://example.com/x.png"]


def test_planted_leak_report_renders_offline(planted_run, tmp_path):
    out, result = planted_run
    assert result.returncode == 0, result.stderr[-3000:]
    page = out / "report.html"
    assert page.stat().st_size < 1.5 * 2**20
    dom = chromium(page, "--dump-dom", net_log=tmp_path / "net.json")
    assert page_requests(tmp_path / "net.json") == []
    where = boxes(dom)

    # above the fold of a 1400x1000 window: the verdict, the growth chart, the top leak's name, holder, component
    for key in ("verdict", "growth-chart", "top-name", "top-holder", "top-component", "top-chart"):
        x, y, w, h = where[key]
        assert w > 0 and h > 0 and x + w <= WIDTH and y + h <= HEIGHT, (key, where[key])
    assert element_text(dom, "verdict").strip() == "LEAK"
    assert "tobytes" in element_text(dom, "top-name")
    assert "host_image_bytes._stash[" in element_text(dom, "top-holder")
    assert element_text(dom, "top-component").strip() == "user or plugin code"

    shot = tmp_path / "shot.png"
    chromium(page, f"--screenshot={shot}")
    image = Image.open(shot)
    assert image.size == (WIDTH, HEIGHT)
    for key in ("growth-chart", "top-chart"):
        share, colours = ink(image, where[key])
        assert share > 0.02 and colours > 20, (key, share, colours)

    # the host flamegraph lies further down: a window tall enough to hold it
    assert_flamegraph_drawn(page, where, "flame-host", tmp_path)
    assert "tobytes (PIL/Image.py:" in dom and "remember_images (" in dom  # frame names, shown on hover


def test_analyze_exports_speedscope_and_folded(planted_run, tmp_path):
    out, _ = planted_run
    result = run_tracer("analyze", str(out), "--out", str(tmp_path), "--export", "speedscope", "--export", "folded")
    assert result.returncode == 0, result.stderr[-2000:]
    report = load_report(tmp_path)
    assert report["files"]["speedscope"] == "survivors.speedscope.json"
    assert report["files"]["folded"] == "survivors.folded"
    doc = json.loads((tmp_path / "survivors.speedscope.json").read_text())
    jsonschema.validate(doc, SPEEDSCOPE_SCHEMA)
    (host,) = [p for p in doc["profiles"] if p["name"].startswith("host")]
    leak = next(f for f in report["findings"] if f["verdict"] == "leak")
    live = max(leak["bytes"], leak["details"].get("undrained_bytes", 0))
    assert live in host["weights"] and host["endValue"] == sum(host["weights"])
    lines = (tmp_path / "survivors.folded").read_text().splitlines()
    for line in lines:
        assert re.fullmatch(r"(host|gpu)(;[^;]+)+ \d+", line), line
    assert len([line for line in lines if line.startswith("host;")]) == len(host["weights"])
    assert any("remember_images (" in line and line.endswith(f" {live}") for line in lines)
    assert "growth.png" in (tmp_path / "summary.md").read_text() and (tmp_path / "growth.png").stat().st_size > 0


def test_server_report_draws_one_flamegraph_per_process(planted_serve_run, tmp_path):
    """The API-server plant's report: the API server's host flamegraph is drawn and holds the planted image
    bytes' allocation site; the engine core has a flamegraph of its own."""
    out, result = planted_serve_run("serve_image_bytes", "api-server")
    assert result.returncode == 0, result.stderr[-3000:]
    page = out / "report.html"
    dom = chromium(page, "--dump-dom", net_log=tmp_path / "net.json")
    assert page_requests(tmp_path / "net.json") == []
    where = boxes(dom)
    assert "flame-host" not in where  # no flamegraph of the processes' survivors added together
    drawn = [key for key in where if key.startswith("flame-")]
    assert "flame-api-server-host" in drawn and "flame-engine-core-host" in drawn, drawn
    assert_flamegraph_drawn(page, where, "flame-api-server-host", tmp_path)
    assert "in process api-server</h2>" in dom
    # the planted leak's allocation site, as the page draws it (d3-flame-graph writes each frame's name)
    (planted,) = [f for f in load_report(out)["findings"] if f["verdict"] == "leak" and f["role"] == "api-server"]
    assert any(path.startswith("serve_image_bytes._kept[") for path in planted["details"]["holders"])
    site = html_lib.escape(frame_name(planted["stack"][0]), quote=False)
    svg = dom[dom.index('id="flame-api-server-host"'):]
    assert site in svg[:svg.index("</svg>")], site
