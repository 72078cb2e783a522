"""JUnit XML, for CI systems that show test results."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from ....analysis.stacks import short_path
from ....units import fmt_bytes
from ....safe_files import write_text
from ....text_escape import one_line, xml_text
from ...report_file import frame_lines
from ..evaluate import ACCEPTED, OFFENDING, GateResult
from . import Output, register
from .text import render_text

JUNIT_FILE = "tracer-gate.xml"


def render_junit(result: GateResult, frames: int = 8) -> str:
    """JUnit XML: a test case per leak finding (failed when it offends, skipped when the baseline accepts it)
    and one for the gate itself."""
    suites = ET.Element("testsuites", name="tracer")
    suite = ET.SubElement(suites, "testsuite", name="tracer.gate")
    props = ET.SubElement(suite, "properties")
    for name, value in (("report", result.source or ""), ("verdict", str(result.report.get("verdict"))),
                        ("limits", result.limits.describe()), ("baseline", result.baseline_source or "")):
        ET.SubElement(props, "property", name=name, value=xml_text(value))
    failures = skipped = 0
    for c in result.checked:
        top = c.frames(frames)
        owner = f": {top[0].function} ({short_path(top[0].file)})" if top else ""
        case = ET.SubElement(suite, "testcase", classname=xml_text(one_line(f"tracer.gate.{c.domain}")),
                             name=xml_text(one_line(f"{c.id} {c.component}{owner}")), time="0")
        body = xml_text("\n".join([c.headline(), one_line(c.why)] + frame_lines(top)))
        if c.status == OFFENDING:
            failures += 1
            ET.SubElement(case, "failure", message=xml_text(one_line(f"{c.why}: {fmt_bytes(c.per_round)}/round")),
                          type="leak").text = body
        elif c.status == ACCEPTED:
            skipped += 1
            ET.SubElement(case, "skipped", message=xml_text(one_line(c.why)))
        else:
            ET.SubElement(case, "system-out").text = body
    gate = ET.SubElement(suite, "testcase", classname="tracer.gate", name="gate", time="0")
    if not result.passed:
        failures += 1
        ET.SubElement(gate, "failure", message=xml_text(result.headline()), type="gate").text = xml_text(
            render_text(result))
    else:
        ET.SubElement(gate, "system-out").text = xml_text(render_text(result))
    tests = len(result.checked) + 1
    for el in (suites, suite):
        el.set("tests", str(tests))
        el.set("failures", str(failures))
        el.set("errors", "0")
        el.set("skipped", str(skipped))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(result: GateResult, path: Path) -> Path:
    return write_text(path, render_junit(result))


@register("junit")
def print_junit(result: GateResult, out: Output) -> None:
    """The text, and the XML written to `--junit-file` (default tracer-gate.xml)."""
    out.stdout.write(render_text(result))
    out.written.append(write_junit(result, out.junit_file or Path(JUNIT_FILE)))
