"""A finding: one group of surviving allocations with the same call stack, host or GPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from .stacks import Frame, fingerprint, owner_index


@dataclass
class Finding:
    """Surviving allocations of one call stack.

    `per_round_bytes[k]` is how many of the group's bytes allocated after the baseline were live at the end of
    measured round k (the last entry equals `bytes` when the capture covers every round).
    """

    domain: str  # "host", "gpu" or "rss" (resident memory no allocation explains)
    stack: tuple[Frame, ...]
    bytes: int
    count: int
    per_round_bytes: list[int] = field(default_factory=list)
    component: str = "unknown"
    verdict: str = "unclassified"
    details: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)  # capture-internal keys of the merged groups (memray stack ids)
    role: str | None = None  # the process it lives in, in captures of several processes
    key: str | None = None  # a stable id for a finding without a stack (domain `rss`)

    @property
    def id(self) -> str:
        return self.key or fingerprint(self.domain, self.stack, role=self.role)

    @property
    def owner(self) -> Frame | None:
        return self.stack[owner_index(self.stack)] if self.stack else None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "domain": self.domain,
            **({"role": self.role} if self.role else {}),
            "bytes": self.bytes,
            "count": self.count,
            "per_round_bytes": list(self.per_round_bytes),
            "stack": [f.as_dict() for f in self.stack],
            "owner": self.owner.as_dict() if self.owner else None,
            "component": self.component,
            "verdict": self.verdict,
            **({"details": self.details} if self.details else {}),
        }


def merge_by_id(findings: list[Finding]) -> list[Finding]:
    """Merge groups whose stacks differ only in line numbers or deep frames (same fingerprint)."""
    merged: dict[str, Finding] = {}
    for f in findings:
        other = merged.get(f.id)
        if other is None:
            merged[f.id] = f
            continue
        keep, add = (other, f) if other.bytes >= f.bytes else (f, other)
        n = max(len(keep.per_round_bytes), len(add.per_round_bytes))
        pad = lambda xs: list(xs) + [0] * (n - len(xs))  # noqa: E731
        keep.per_round_bytes = [a + b for a, b in zip(pad(keep.per_round_bytes), pad(add.per_round_bytes))]
        keep.bytes += add.bytes
        keep.count += add.count
        keep.sources = keep.sources + add.sources
        for key, value in add.details.items():
            if isinstance(value, int) and not isinstance(value, bool):
                keep.details[key] = keep.details.get(key, 0) + value
            elif key == "released_by":  # bytes per drain step
                mine = keep.details.setdefault(key, {})
                for step, released in value.items():
                    mine[step] = mine.get(step, 0) + released
        merged[f.id] = keep
    return sorted(merged.values(), key=lambda f: f.bytes, reverse=True)
