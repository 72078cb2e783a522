"""RSS that allocations do not explain: which mappings grew, whose pages they are, and what is left.

Pure functions over a capture's `smaps` events (the mapping table at every mark, as changed rows), the
counters at the marks, the `allocator_trim` event of the final drain and the `rss_owners` event (the buffers
the traced process found in grown mappings). Growth of a mapping is set against, in turn:

- **first touch**: a buffer allocated before the baseline whose untouched pages are written during the rounds
  (a preallocated KV cache or staging buffer filling up); bounded by the buffer's size, not a leak;
- the **C heap in use** (glibc mallinfo2: every malloc, traced or not), for the heap, the arenas and the
  anonymous mappings malloc makes for large blocks; host findings say which stacks those bytes are;
- **bounded mappings**: file-backed pages (libraries, model files) and thread stacks, never more than their size;
- **allocator retention**: pages the allocator keeps after free; `malloc_trim(0)` at the final drain returns
  them, so they are measured, not guessed.

What is left after the drain and the trim, growing at a leak rate over the rounds, is a `leak?` finding in
domain `rss` that lists the grown mappings: memory no hook saw (a raw mmap, a native allocator of its own).
"""

from __future__ import annotations

import bisect
import hashlib
import statistics
from dataclasses import dataclass, field

from ..capture import Capture
from ..units import mib
from .components import Rule
from .findings import Finding
from .mapped_allocations import GrownRange, allocations_in_ranges
from .trend import trend
from .verdicts import SUSPECTED, Thresholds, grows

HEAP_KINDS = ("heap", "arena", "anonymous")  # where malloc'd bytes live
BOUNDED_KINDS = ("file", "thread stack", "stack", "special")  # can never grow past the mapping's size
RSS_COMPONENT = "native memory (no allocation hook saw it)"
MIN_RETENTION = 1 << 20
MAX_LISTED = 8
LISTED_GROWTH = 16 * 1024  # a mapping that grew less than this is page-level noise, not listed
REMEDIES = [
    "MALLOC_ARENA_MAX=2 (fewer glibc arenas: less memory kept per thread)",
    "MALLOC_TRIM_THRESHOLD_=<bytes> (give freed memory at the top of the heap back sooner; "
    "MALLOC_MMAP_THRESHOLD_ maps large blocks on their own, returned on free)",
    "run under jemalloc or tcmalloc, as vLLM recommends on CPU (LD_PRELOAD; `tracer diff --allocator jemalloc` "
    "confirms it)",
]

# the call each allocator's retention is measured with at the final drain, and what makes it keep less
RELEASE_CALLS = {"glibc": "malloc_trim(0)", "jemalloc": "mallctl arena.<all>.purge",
                 "tcmalloc": "MallocExtension_ReleaseFreeMemory()"}
OTHER_REMEDIES = {
    "jemalloc": ["MALLOC_CONF=dirty_decay_ms:1000,muzzy_decay_ms:0 (jemalloc returns freed pages sooner)"],
    "tcmalloc": ["TCMALLOC_RELEASE_RATE=10 (tcmalloc returns freed pages to the system sooner; default 1)"],
}


@dataclass
class Mapping:
    start: int
    end: int
    kind: str
    path: str
    rss: int

    @property
    def range(self) -> str:
        return f"{self.start:x}-{self.end:x}"


@dataclass
class Table:
    """The process's mappings at one mark."""

    mark: str
    index: int | None
    maps: dict[int, Mapping]
    seconds: float = 0.0

    def rss_of(self, kinds: tuple[str, ...]) -> int:
        return sum(m.rss for m in self.maps.values() if m.kind in kinds)


def mapping_tables(capture: Capture) -> list[Table]:
    """The full mapping table at every mark, rebuilt from the changed rows of each `smaps` event."""
    current: dict[int, Mapping] = {}
    out = []
    for e in capture.of_type("smaps"):
        if e.get("full"):
            current = {}
        for start in e.get("gone", []):
            current.pop(start, None)
        for start, end, kind, path, rss in e.get("rows", []):
            current[start] = Mapping(start, end, kind, path, rss)
        out.append(Table(e.get("mark"), e.get("index"), dict(current), e.get("seconds", 0.0)))
    return out


def grown(base: Table, now: Table) -> list[tuple[Mapping, int]]:
    """(mapping, bytes grown) for every mapping of `now` whose RSS exceeds what the mappings of `base` that
    start inside it (same kind) held: the kernel merges adjacent anonymous mappings and arenas grow in place, so
    mappings are matched by address range, not by start alone."""
    starts = sorted(base.maps)
    out = []
    for m in now.maps.values():
        lo, hi = bisect.bisect_left(starts, m.start), bisect.bisect_left(starts, m.end)
        before = sum(base.maps[s].rss for s in starts[lo:hi] if base.maps[s].kind == m.kind)
        if m.rss > before:
            out.append((m, m.rss - before))
    return sorted(out, key=lambda x: -x[1])


@dataclass
class Owner:
    """A buffer the traced process found in a grown mapping (a tensor storage, a numpy array)."""

    path: str  # holder path, e.g. `myplugin.staging`
    kind: str  # "tensor" or "ndarray"
    address: int
    nbytes: int
    before_baseline: bool  # its mapping existed at the baseline

    def inside(self, m: Mapping) -> bool:
        """Whether the buffer has bytes in the mapping (a large buffer can span several mappings)."""
        return m.start < self.address + self.nbytes and self.address < m.end


def owners_of(capture: Capture) -> list[Owner]:
    rows = capture.of_type("rss_owners")
    return [Owner(**o) for o in rows[-1]["owners"]] if rows else []


@dataclass
class Accounting:
    """RSS growth at one mark over the baseline, split by what explains it."""

    mark: str
    index: int | None
    growth: int  # RSS of all mappings, net
    by_kind: dict[str, int]
    first_touch: int
    heap_in_use: int  # growth of malloc's in-use bytes set against heap, arena and anonymous growth
    bounded: int  # file-backed and stack pages
    unexplained: int
    grown: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"mark": self.mark, "index": self.index, "growth": self.growth, "by_kind": self.by_kind,
                "first_touch": self.first_touch, "heap_in_use": self.heap_in_use, "bounded": self.bounded,
                "unexplained": self.unexplained, "grown": self.grown}


def account(base: Table, now: Table, heap_growth: int | None, owners: list[Owner], noise: int) -> Accounting:
    """Split the growth of `now` over `base`: first touch of known buffers, the C heap's in-use growth,
    bounded mappings, and the rest."""
    kinds = sorted({m.kind for m in (*base.maps.values(), *now.maps.values())})
    by_kind = {k: now.rss_of((k,)) - base.rss_of((k,)) for k in kinds}
    first_touch = bounded = heap_side = 0
    listed = []
    for m, g in grown(base, now):
        mine = [o for o in owners if o.inside(m)]
        if m.kind in BOUNDED_KINDS:
            bounded += g
            why = "file-backed pages" if m.kind == "file" else f"{m.kind}, bounded by its size"
        elif any(o.before_baseline for o in mine):
            touched = min(g, sum(o.nbytes for o in mine if o.before_baseline))
            first_touch += touched
            heap_side += g - touched
            why = "first touch of " + ", ".join(o.path for o in mine if o.before_baseline)
        else:
            heap_side += g
            why = ("pages of " + ", ".join(o.path for o in mine)) if mine else ""
        if g > noise and len(listed) < MAX_LISTED:
            listed.append({"range": m.range, "kind": m.kind, "path": m.path, "grew": g, "rss": m.rss,
                           **({"owner": why} if why else {})})
    # the heap and the arenas shrink when trimmed; that must not hide growth of anonymous mappings elsewhere
    heap_net = max(0, by_kind.get("heap", 0) + by_kind.get("arena", 0))
    anon_net = max(0, by_kind.get("anonymous", 0) - first_touch)
    in_use = max(heap_growth or 0, 0)
    unexplained = max(0, min(heap_side, heap_net + anon_net) - in_use)
    return Accounting(now.mark, now.index, sum(by_kind.values()), by_kind, first_touch,
                      min(in_use, heap_side), bounded, unexplained, listed)


def first_touch_rows(base: Table, rounds: list[Table], end: Table, owners: list[Owner]) -> list[dict]:
    """Each buffer allocated before the baseline whose mapping grew: its bound (the buffer's size), the pages
    touched at each round end, and whether the series is flattening (the second half grows less than the first)."""
    out = []
    for o in owners:
        if not o.before_baseline:
            continue

        def resident(t: Table) -> int:
            return sum(m.rss for m in t.maps.values() if o.inside(m))

        series = [resident(t) for t in rounds]
        steps = [b - a for a, b in zip([resident(base)] + series, series)]
        half = len(steps) // 2
        flattening = bool(half) and sum(steps[half:]) < sum(steps[:half]) * 0.5
        out.append({"owner": o.path, "kind": o.kind, "bound": o.nbytes, "resident_at_baseline": resident(base),
                    "resident_per_round": series, "resident_at_end": resident(end),
                    "touched_fraction": round(min(resident(end) / o.nbytes, 1.0), 3) if o.nbytes else None,
                    "flattening": flattening})
    return out


def retention(capture: Capture) -> dict | None:
    """What the allocators kept after the final drain: RSS `malloc_trim(0)` returned, and glibc's arena state
    before and after (under jemalloc or tcmalloc: their own release call and statistics, named in `allocator`);
    on CUDA the reserved bytes `empty_cache` returned (see `gpu_retention`)."""
    rows = capture.of_type("allocator_trim")
    if not rows:
        return None
    e = rows[-1]
    before, after = e["before"], e["after"]
    allocator = (before.get("malloc") or {}).get("allocator", "glibc")  # captures before it was named: glibc
    out = {"allocator": allocator, "release_call": RELEASE_CALLS.get(allocator),
           "trim_returned": before["rss_bytes"] - after["rss_bytes"], "rss_before_trim": before["rss_bytes"],
           "rss_after_trim": after["rss_bytes"], "malloc_before": before.get("malloc"),
           "malloc_after": after.get("malloc")}
    free_before = (before.get("malloc") or {}).get("free_bytes") or 0
    out["retained"] = max(out["trim_returned"], 0) >= MIN_RETENTION or free_before >= 4 * MIN_RETENTION
    if out["retained"]:
        out["remedies"] = REMEDIES if allocator == "glibc" else OTHER_REMEDIES.get(allocator, [])
    if e.get("gpu"):
        out["gpu"] = gpu_retention(e["gpu"])
    return out


def gpu_retention(gpu: dict) -> dict:
    """Reserved-but-free CUDA segments at the drain: what `empty_cache` gave back is allocator retention."""
    before, after = gpu["before"], gpu["after"]
    return {"reserved_before": before["reserved_bytes"], "reserved_after": after["reserved_bytes"],
            "allocated": before["allocated_bytes"],
            "empty_cache_returned": before["reserved_bytes"] - after["reserved_bytes"],
            "free_in_segments_before": before["reserved_bytes"] - before["allocated_bytes"]}


def gpu_outside_allocator(rows: list[dict]) -> list[dict]:
    """Per row (a round or a mark with CUDA counters): device memory used outside PyTorch's caching allocator
    (`mem_get_info` used minus `memory_reserved`: CUDA context, cuBLAS/cuDNN workspaces, NCCL, other libraries),
    and the reserved bytes no tensor uses (free segments the caching allocator keeps)."""
    out = []
    for r in rows:
        if r.get("gpu_used_bytes") is None or r.get("gpu_reserved_bytes") is None:
            continue
        out.append({"index": r.get("index"), "outside_allocator": r["gpu_used_bytes"] - r["gpu_reserved_bytes"],
                    "reserved_free": r["gpu_reserved_bytes"] - (r.get("gpu_allocated_bytes") or 0)})
    return out


def is_leak_rate(series: list[int], th: Thresholds) -> tuple[bool, int, int]:
    """(growing like a leak, Theil-Sen bytes per round, rounds that grew): the trend test of host groups
    (tracer.analysis.verdicts.grows), on the unexplained RSS at each round end, the baseline counting as 0."""
    points = [0] + list(series)
    if len(series) < 2:
        return False, 0, 0
    growing = sum(1 for a, b in zip(points, points[1:]) if b - a >= th.min_per_round)
    return grows(points, th), int(trend(points).slope), growing


def rss_finding(per_round: list[Accounting], end: Accounting | None, th: Thresholds,
                release_call: str = RELEASE_CALLS["glibc"]) -> Finding | None:
    """The `leak?` finding: unexplained RSS that survives the drain and the trim and grew at a leak rate."""
    if end is None or end.unexplained < th.min_total:
        return None
    series = [a.unexplained for a in per_round]
    leaking, rate, growing = is_leak_rate(series, th)
    if not leaking:
        return None
    mappings = [g for g in end.grown if g["kind"] in HEAP_KINDS and "first touch" not in g.get("owner", "")
                and g["grew"] >= th.min_per_round]
    reason = (f"RSS no allocation explains grows {mib(rate)}/round in {growing} of {len(series)} rounds and "
              f"{mib(end.unexplained)} stay after the drain and {release_call}; grown mappings: "
              + ", ".join(f"{g['kind']} {g['range']} +{mib(g['grew'])}" for g in mappings[:4]))
    key = "|".join(sorted({g["kind"] + (":" + g["path"].rsplit("/", 1)[-1] if g["path"] else "") for g in mappings}))
    return Finding("rss", (), end.unexplained, 0, series, component=RSS_COMPONENT, verdict=SUSPECTED,
                   details={"reason": reason, "mappings": mappings},
                   key="r" + hashlib.sha1(f"rss:{key}".encode()).hexdigest()[:15])


def grown_ranges(base: Table, drained: Table, before_trim: Table | None, owners: list[Owner]) -> list[GrownRange]:
    """The heap, arena and anonymous mappings that grew by the end of the drain (before malloc_trim(0), whose
    returned pages would otherwise hide the heap's growth) or by the final mark, largest first."""
    after = {m.start: g for m, g in grown(base, drained)}
    ranges = {}
    for m, g in grown(base, before_trim or drained):
        if m.kind in HEAP_KINDS and max(g, after.get(m.start, 0)) > LISTED_GROWTH:
            ranges[m.start] = (m, g)
    for m, g in grown(base, drained):
        if m.kind in HEAP_KINDS and g > LISTED_GROWTH and m.start not in ranges:
            ranges[m.start] = (m, g)
    out = [GrownRange(m.start, m.end, m.kind, m.path, g, after.get(m.start, 0),
                      min(g, sum(o.nbytes for o in owners if o.before_baseline and o.inside(m))))
           for m, g in ranges.values()]
    return sorted(out, key=lambda r: -max(r.grew, r.after_trim))[:MAX_LISTED]


def worth_matching(ranges: list[GrownRange], th: Thresholds) -> bool:
    """Whether a grown range kept `min_total` past the drain and the trim that no first-touch buffer explains."""
    return any(r.after_trim - r.first_touch >= th.min_total for r in ranges)


def matched_allocations(capture: Capture, ranges: list[GrownRange], th: Thresholds,
                        rules: tuple[Rule, ...]) -> dict | None:
    """memray's live allocations in the grown ranges, when one of them kept `min_total` of growth that neither the
    drain, nor the trim, nor a first-touch buffer explains: one pass over every raw record of the capture (about
    1.5 us each, as long as the rest of the analysis of a short run), so not for growth the trim gives back."""
    streams = [s for s in capture.streams_of("memray") if not capture.several_processes]
    path = capture.stream_file(streams[0]) if streams else None
    if path is None or not worth_matching(ranges, th):
        return None
    return allocations_in_ranges(path, ranges, native=bool(streams[0].settings.get("native_traces")), rules=rules)


def rss_analysis(capture: Capture, th: Thresholds, rules: tuple[Rule, ...] = ()) -> tuple[dict | None, Finding | None]:
    """The report's `rss` section and, when RSS grows like a leak with nothing to explain it, its finding."""
    tables = mapping_tables(capture)
    base = next((t for t in tables if t.mark == "baseline"), None)
    gpu = gpu_outside_allocator([m for m in capture.marks if m["name"] in ("baseline", "round")])
    if base is None:  # a capture without mapping tables (recorded before them) still has its CUDA counters
        return ({"gpu": gpu} if gpu else None), None
    owners = owners_of(capture)
    marks = {(m["name"], m.get("index")): m for m in capture.marks}
    heap0 = marks.get(("baseline", None), {}).get("heap_bytes")

    def heap_growth(t: Table) -> int | None:
        h = marks.get((t.mark, t.index), {}).get("heap_bytes")
        return h - heap0 if h is not None and heap0 is not None else None

    rounds = [t for t in tables if t.mark == "round"]
    per_round = [account(base, t, heap_growth(t), owners, LISTED_GROWTH) for t in rounds]
    drained = next((t for t in tables if t.mark == "drained"), None)
    end = account(base, drained, heap_growth(drained), owners, LISTED_GROWTH) if drained else None
    kept = retention(capture)
    release_call = (kept or {}).get("release_call") or RELEASE_CALLS["glibc"]
    finding = rss_finding(per_round, end, th, release_call) if end is not None else None
    reads = [t.seconds for t in tables]
    section = {
        "per_round": [a.as_dict() for a in per_round],
        "after_drain": end.as_dict() if end else None,
        "first_touch": first_touch_rows(base, rounds, drained or (rounds[-1] if rounds else base), owners),
        "retention": kept,
        "mappings_at_baseline": len(base.maps),
        "read_seconds_median": round(statistics.median(reads), 4) if reads else None,
    }
    if drained is not None:
        before_trim = next((t for t in tables if t.mark == "before_trim"), None)
        matched = matched_allocations(capture, grown_ranges(base, drained, before_trim, owners), th, rules)
        if matched is not None:
            section["allocations"] = matched
            if finding is not None:
                in_range = {m["range"]: m for m in matched["mappings"]}
                for m in finding.details["mappings"]:
                    if m["range"] in in_range:
                        m["allocated_bytes"] = in_range[m["range"]]["allocated_bytes"]
    if gpu:
        section["gpu"] = gpu
    return section, finding
