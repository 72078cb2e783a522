"""Helpers of the hostile-input tests: run the CLI in this process, and check that output stays inert."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

from lxml import etree as lxml_etree
from markdown_it import MarkdownIt

from tracer.cli import run

HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"
CLEAN_CAPTURE = Path(__file__).resolve().parent / "fixtures" / "h100-vllm0.25" / "clean"
PLANTED_CAPTURE = Path(__file__).resolve().parent / "fixtures" / "h100-vllm0.25" / "planted"
INJECTIONS = json.loads((HOSTILE / "injections.json").read_text())
# The workflow commands tracer itself writes (with --format github).
OWN_COMMAND = re.compile(r"^::(error|warning|notice) (file=[^:,\s]*,line=\d+,)?title=[^:,\r\n]*::[^\r\n]*$")


def invoke(*args: str, env: dict | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """`tracer ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(code: int, out: str, err: str, allowed=(0, 1, 2)) -> None:
    assert code in allowed, (code, out[-2000:], err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("tracer: error: "), err


def assert_no_injected_command(text: str) -> None:
    """No line begins a GitHub workflow command unless it is one tracer writes."""
    for line in re.split(r"\r\n|\r|\n", text):
        stripped = line.lstrip()
        if stripped.startswith("::"):
            assert OWN_COMMAND.match(stripped), line
        assert not stripped.startswith("##["), line


def assert_inert_markdown(text: str, headings: set[str] | None = None) -> None:
    """Parsed as CommonMark (with tables): no HTML, no link, no image but tracer's own growth chart, and every
    heading one tracer writes (`headings`: their text prefixes; None accepts any heading that starts with text
    tracer uses)."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    stack = list(tokens)
    while stack:
        tok = stack.pop()
        own_chart = tok.type == "image" and tok.attrGet("src") == "growth.png"
        assert own_chart or tok.type not in ("html_block", "html_inline", "link_open", "image"), (tok.type,
                                                                                                  tok.content)
        stack.extend(tok.children or [])
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            title = tokens[i + 1].content
            allowed = headings or {"tracer ", "Environment", "Rounds", "Growth", "Leaks", "Reference cycles",
                                   "Suspected", "Caches", "process ", "RSS by mapping", "Device memory", "Largest",
                                   "Reproduce", "`", "``"}
            assert any(title.startswith(h) for h in allowed), title


def assert_xml_parses(text: str | bytes) -> None:
    data = text.encode("utf-8") if isinstance(text, str) else text
    ET.fromstring(data)
    lxml_etree.fromstring(data, lxml_etree.XMLParser(recover=False, resolve_entities=False))


def copy_capture(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("summary-from-h100.md"))
    return dest


def rewrite_events(capture: Path, change) -> None:
    """Apply `change(row)` to every event of the capture (it returns the row to keep)."""
    path = capture / "events.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(change(r)) + "\n" for r in rows))


def tree(root: Path) -> dict[str, tuple]:
    """Every path under `root` with what it is and its content's size and mtime: to see what a command wrote."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out
