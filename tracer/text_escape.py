"""Text from reports, captures and baselines made inert where tracer prints it.

Frame names, file names, ids, components, reasons and manifest fields come from files anyone can write. Printed
as they are they could start a GitHub workflow command (a line beginning with `::`), add Markdown headings,
links, images or HTML, break a table or close a code fence, or make JUnit XML ill-formed. Every renderer passes
such text through one of these functions.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything that can end or rewrite a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters XML 1.0 does not allow anywhere in a document.
_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Characters that open inline markup anywhere (emphasis, code, links, images, HTML, entities, table cells,
# strikethrough, headings), and what starts a block at the beginning of a line (lists, setext headings).
_MD_INLINE = re.compile(r"""([\\`*_\[\]<>|&~#!])""")
_MD_LINE_START = re.compile(r"^(\s*)([-+]|\d+[.)]|=)(?=\s|$|=*\s*$)")
# Bare URLs that GitHub would turn into links.
_MD_AUTOLINK = re.compile(r"(?i)(://|www\.)")
_BACKTICKS = re.compile("`+")
# What the GitHub runner treats as a command at the start of a line (after leading whitespace).
_COMMAND_START = re.compile(r"^(\s*)(::|##\[)")


def one_line(value: object) -> str:
    """`value` as text on one line: controls (CR, LF, ESC, ...) shown as `\\xNN`, lone surrogates as U+FFFD."""
    text = value if isinstance(value, str) else str(value)
    text = _SURROGATE.sub("\ufffd", text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def inert_lines(text: str) -> str:
    """Plain text for a CI log: a line that would begin a workflow command (`::` or `##[`) gets a `.` in front."""
    return "\n".join(_COMMAND_START.sub(r"\1.\2", line) for line in text.split("\n"))


def github_data(value: object) -> str:
    """Workflow command data, escaped as GitHub documents: `%`, CR and LF."""
    text = _SURROGATE.sub("\ufffd", value if isinstance(value, str) else str(value))
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_property(value: object) -> str:
    """A workflow command property value: the data escapes plus `:` and `,`."""
    return github_data(value).replace(":", "%3A").replace(",", "%2C")


def md_text(value: object) -> str:
    """Markdown text that renders as itself: one line whose markup characters are backslash-escaped, so it cannot
    open a heading, list, link (bare URLs included), image, HTML tag, code span or emphasis, nor split a table
    cell; ordinary punctuation (`0.32.0`, `cpu: x86_64, 2 cores` but for its `_`) stays readable."""
    text = _MD_INLINE.sub(r"\\\1", one_line(value))
    text = _MD_AUTOLINK.sub(lambda m: m.group(1).replace("/", "\\/").replace(".", "\\."), text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)


def md_code(value: object, in_table: bool = False) -> str:
    """An inline code span holding `value` literally: its fence is longer than any run of backticks inside.
    In a table cell, `|` is escaped too (GitHub splits cells on it even inside code)."""
    text = one_line(value)
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    if in_table:
        text = text.replace("|", "\\|")
    return f"{fence}{pad}{text}{pad}{fence}"


def md_fence(lines: list[str]) -> list[str]:
    """A fenced code block around `lines` (each kept to one line): the fence is longer than any backtick run in
    them, so no line can close it early."""
    body = [one_line(line) for line in lines]
    longest = max((len(m) for line in body for m in _BACKTICKS.findall(line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *body, fence]


def xml_text(value: object) -> str:
    """Text XML 1.0 can hold: forbidden characters (most controls, lone surrogates, U+FFFE/U+FFFF) become U+FFFD."""
    return _XML_FORBIDDEN.sub("\ufffd", value if isinstance(value, str) else str(value))
