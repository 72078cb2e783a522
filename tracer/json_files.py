"""JSON files tracer writes and reads back: written atomically, read with one-line errors for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UsageError


def write_json_atomic(path: Path, data: object) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, what: str, hint: str = "") -> object:
    """The parsed content of `path`; a UsageError naming `what` when it is missing, a directory or not JSON."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path}: no such file" + (f" ({hint})" if hint else ""))
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a directory, not a file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path}: unreadable ({exc})") from exc


def require_schema(data: object, schema: str, where: str, kind: str) -> dict:
    """`data` as a dict of the given schema; a UsageError naming `where` when it is not (a `kind` is expected)."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a tracer {kind} (a JSON object is expected)")
    if data.get("schema") != schema:
        raise UsageError(f"{where}: schema {data.get('schema')!r}, expected {schema!r}")
    return data
