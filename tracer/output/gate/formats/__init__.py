"""Gate output formats: a registry of functions that print a `GateResult` and write the files CI reads.

To add a format: a module in this package with a function `fn(result, out: Output) -> None` decorated with
`@register("name")`; every module here is imported when the registry is first used, and `--format` offers it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TextIO

from ....errors import UsageError

_FORMATS: dict[str, Callable] = {}


@dataclass
class Output:
    """Where a format writes: the terminal stream, the environment CI sets, the JUnit file asked for."""

    stdout: TextIO
    env: Mapping[str, str]
    junit_file: Path | None = None
    written: list[Path] = field(default_factory=list)  # files written besides the stream


def register(name: str):
    def add(fn: Callable) -> Callable:
        _FORMATS[name] = fn
        return fn

    return add


def formats() -> dict[str, Callable]:
    """Every registered format by name, text first."""
    if not _FORMATS:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(_FORMATS.items(), key=lambda kv: (kv[0] != "text", kv[0])))


def emit(result, fmt: str = "text", out: TextIO | None = None, junit_file: Path | None = None,
         env: Mapping[str, str] | None = None) -> list[Path]:
    """Print the gate's outcome in `fmt` to `out` (stdout) and write the files that format (and `junit_file`,
    with any format) asks for. Returns the files written."""
    known = formats()
    if fmt not in known:
        raise UsageError(f"unknown gate format {fmt!r}: use one of {', '.join(known)}")
    output = Output(out or sys.stdout, os.environ if env is None else env, junit_file)
    known[fmt](result, output)
    if junit_file is not None and fmt != "junit":
        from .junit import write_junit

        output.written.append(write_junit(result, junit_file))
    output.stdout.flush()
    return output.written
