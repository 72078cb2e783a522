"""report.html, growth.png and the exports from small handmade report data (pure logic: no engine, no browser)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from PIL import Image

from conftest import external_resources
from tracer.output.exports import folded, speedscope
from tracer.output.growth_png import write_growth_png
from tracer.output.html import CACHE_CARDS, flame_tree, folded_caches, render_html
from tracer.output.timeline import build_timeline, growth_series

SCHEMA = json.loads((Path(__file__).parents[1] / "fixtures" / "speedscope" / "file-format-schema.json").read_text())
MiB = 2**20


def frame(function: str, file: str, line: int) -> dict:
    return {"function": function, "file": file, "line": line}


LOOP = frame("tracer_workload_call", "/src/tracer/own_frames.py", 40)  # tracer hands over to the workload here: exports stop below it
LEAK = {"id": "h0000000000000001", "domain": "host", "bytes": 6 * MiB, "count": 6, "verdict": "leak",
        "per_round_bytes": [MiB, 2 * MiB, 3 * MiB, 4 * MiB, 5 * MiB, 6 * MiB], "component": "user or plugin code",
        "stack": [frame("tobytes", "/venv/site-packages/PIL/Image.py", 905), frame("remember", "/src/plant.py", 14),
                  frame("chat", "/src/plant.py", 18), LOOP],
        "owner": frame("tobytes", "/venv/site-packages/PIL/Image.py", 905),
        "details": {"reason": "grows", "holders": ["plant._stash[3]"], "cycle": {"path": "a -> b -> a"}}}
CACHE = {"id": "h0000000000000002", "domain": "host", "bytes": MiB, "count": 2, "verdict": "cache",
         "per_round_bytes": [MiB] * 6, "component": "encoder cache",
         "stack": [frame("forward", "/venv/site-packages/vllm/model.py", 872), frame("chat", "/src/plant.py", 18),
                   LOOP],
         "owner": frame("forward", "/venv/site-packages/vllm/model.py", 872),
         "details": {"reason": "released by the drain", "undrained_bytes": 3 * MiB}}
GPU = {"id": "g0000000000000003", "domain": "gpu", "bytes": 2 * MiB, "count": 1, "verdict": "transient",
       "per_round_bytes": [], "component": "encoder cache",
       "stack": [frame("forward;x", "/venv/site-packages/vllm/m.py", 1)],
       "owner": None}
EVENTS = [
    {"type": "round", "index": 0, "phase": "warmup", "rss_bytes": 100 * MiB, "heap_bytes": 10 * MiB},
    {"type": "drain", "when": "baseline"},
    {"type": "mark", "name": "baseline", "rss_bytes": 90 * MiB, "heap_bytes": 9 * MiB},
    {"type": "round", "index": 1, "phase": "measured", "rss_bytes": 95 * MiB, "heap_bytes": 12 * MiB},
    {"type": "mark", "name": "round", "index": 1, "rss_bytes": 95 * MiB, "heap_bytes": 12 * MiB},
    {"type": "round", "index": 2, "phase": "measured", "rss_bytes": 99 * MiB, "heap_bytes": 14 * MiB},
    {"type": "mark", "name": "drained", "rss_bytes": 97 * MiB, "heap_bytes": 13 * MiB},
]


def report(findings=(LEAK, CACHE, GPU)) -> dict:
    return {"verdict": "leak", "status": "complete",
            "run": {"model": "tiny", "device": "cpu", "command": "tracer diff"},
            "timeline": build_timeline(EVENTS), "findings": list(findings), "notes": [], "unattributed": [],
            "vllm_check": {}}


def test_timeline_has_round_ends_and_marks_in_time_order():
    timeline = build_timeline(EVENTS)
    assert [(p["label"], p["kind"]) for p in timeline] == [
        ("warmup 0", "warmup"), ("baseline", "baseline"), ("1", "measured"), ("2", "measured"),
        ("final drain", "drained")]
    assert growth_series(timeline) == {"rss_bytes": [10.0, 0.0, 5.0, 9.0, 7.0], "heap_bytes": [1.0, 0.0, 3.0, 5.0, 4.0]}


def test_folded_stacks_are_root_first_weighted_by_live_bytes():
    lines = folded([LEAK, CACHE, GPU]).splitlines()
    assert lines == [
        f"host;chat (/src/plant.py:18);remember (/src/plant.py:14);tobytes (PIL/Image.py:905) {6 * MiB}",
        f"host;chat (/src/plant.py:18);forward (vllm/model.py:872) {3 * MiB}",  # the cache at its fill
        f"gpu;forward:x (vllm/m.py:1) {2 * MiB}",  # ';' inside a frame name would split it
    ]
    for line in lines:
        stack, weight = line.rsplit(" ", 1)
        assert int(weight) > 0 and all(stack.split(";"))


def test_speedscope_file_matches_the_published_schema():
    doc = speedscope([LEAK, CACHE, GPU], "tracer diff")
    jsonschema.validate(doc, SCHEMA)
    host, gpu = doc["profiles"]
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert [[names[i] for i in s] for s in host["samples"]] == [["chat", "remember", "tobytes"], ["chat", "forward"]]
    assert host["weights"] == [6 * MiB, 3 * MiB] and host["endValue"] == 9 * MiB and gpu["weights"] == [2 * MiB]
    try:
        jsonschema.validate({**doc, "profiles": [{**host, "unit": "pages"}]}, SCHEMA)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the schema accepted an unknown unit")


def test_flame_tree_values_are_inclusive_bytes():
    tree = flame_tree([LEAK, CACHE], "host")
    assert tree["value"] == 9 * MiB
    (chat,) = tree["children"]
    assert chat["value"] == 9 * MiB and sorted(c["value"] for c in chat["children"]) == [3 * MiB, 6 * MiB]
    assert flame_tree([LEAK], "gpu") is None


def test_page_shows_findings_and_inlines_everything():
    html = render_html(report())
    assert external_resources(html) == []
    for text in ("LEAK", "tobytes (PIL/Image.py:905)", "plant._stash[3]", "user or plugin code", "a -&gt; b -&gt; a",
                 'id="flame-host"', 'id="flame-gpu"', "Chart.defaults", "flamegraph()"):
        assert text in html, text
    data = json.loads(html.split('<script id="chart-data" type="application/json">')[1].split("</script>")[0])
    assert data["findings"][LEAK["id"]] == LEAK["per_round_bytes"] and GPU["id"] not in data["findings"]
    assert data["growth"]["labels"] == ["warmup 0", "baseline", "1", "2", "final drain"]


def test_caches_past_the_cards_fold_into_a_row_per_process_and_component():
    kernels = [{**CACHE, "id": f"h{k:016x}", "role": "worker-0", "component": "oneDNN / native kernels",
                "bytes": (k + 1) * 1024, "details": {}} for k in range(CACHE_CARDS + 5)]
    encoder = {**CACHE, "role": "engine-core"}
    cards, rows = folded_caches([{**f, "live": max(f["bytes"], f["details"].get("undrained_bytes", 0))}
                                 for f in [*kernels, encoder]])
    assert cards[0]["id"] == encoder["id"] and len(cards) == CACHE_CARDS
    assert rows == [{"role": "worker-0", "component": "oneDNN / native kernels", "count": 6,
                     "live": sum(range(1, 7)) * 1024}]
    html = render_html(report([{**LEAK, "role": "api-server"}, *kernels, encoder]))
    assert f"<strong>{CACHE_CARDS + 6}</strong> cache(s)" in html and "6 more cache(s)" in html
    assert html.count('class="finding panel"') == 1 + CACHE_CARDS
    assert "vLLM engine" not in html and "user or plugin code - process api-server" in html
    assert '<dd id="top-role">api-server</dd>' in html
    assert "more cache(s)" not in render_html(report())


def test_page_escapes_report_text():
    hostile = {**LEAK, "details": {"holders": ["x['</script><script>alert(1)</script>']"]}}
    html = render_html(report([hostile]))
    assert "<script>alert(1)" not in html


def test_growth_png_is_drawn(tmp_path):
    path = tmp_path / "growth.png"
    assert write_growth_png(build_timeline(EVENTS), path)
    image = Image.open(path)
    assert image.size == (1000, 450) and len(image.convert("RGB").getcolors(2**16)) > 50
    assert not write_growth_png([], tmp_path / "none.png")
