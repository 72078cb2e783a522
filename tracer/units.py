"""Byte sizes, read as people write them (`1 MiB`, `512KiB`, `2MB`, `4096`) and written for people."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"bad size {text!r}: use e.g. 1MiB, 512KiB, 2MB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[unit])


def fmt_bytes(n: float) -> str:
    """Bytes for people: `812 B`, `64.0 KiB`, `1.69 MiB`, `2.10 GiB`."""
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 1024:
        return f"{sign}{n:.0f} B"
    if n < 1024**2:
        return f"{sign}{n / 1024:.1f} KiB"
    if n < 1024**3:
        return f"{sign}{n / 1024**2:.2f} MiB"
    return f"{sign}{n / 1024**3:.2f} GiB"


def mib(n: int | float | None) -> str:
    """Bytes in MiB with two decimals, signed when negative; `-` for an unknown value (report tables)."""
    if n is None:
        return "-"
    return f"{n / 2**20:+.2f} MiB" if n < 0 else f"{n / 2**20:.2f} MiB"
