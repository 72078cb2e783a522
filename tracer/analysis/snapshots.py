"""GPU memory growth from torch CUDA memory snapshots (``torch.cuda.memory._dump_snapshot``).

A snapshot lists every segment the caching allocator holds and every block in it; a block in state
``active_allocated`` is a live tensor allocation and keeps the frames recorded when it was allocated (when
``torch.cuda.memory._record_memory_history`` was on at that time). Two snapshots, one at the end of warmup
and one after the measured rounds, give the GPU memory that was allocated in between and is still live,
grouped by allocation stack: the same shape of finding as the host side (``tracer.analysis.findings.Finding``,
domain ``"gpu"``).

Public API::

    load_snapshot(path) -> dict
    live_blocks(snapshot) -> list[Block]
    clean_stack(frames) -> tuple[Frame, ...]
    summary_totals(snapshot) -> dict
    diff_snapshots(baseline, final) -> list[Finding]
    per_round_series(baseline, rounds) -> dict[str, list[int]]
    diff_series(baseline, rounds) -> list[Finding]
    growth_accounting(baseline, final) -> dict

Snapshot arguments are loaded dicts or paths (then loaded with ``load_snapshot``).

Snapshot files are pickles. ``pickle.load`` on a file from a bug report runs whatever code the file names, so
they are only ever read with a restricted unpickler that refuses every global: real snapshots hold nothing
but dicts, lists, tuples, strings, numbers, booleans and None.
"""

from __future__ import annotations

import gc
import io
import json
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from operator import itemgetter
from typing import Iterable, Iterator, NamedTuple, Union

from ..errors import UsageError
from .findings import Finding, merge_by_id
from ..safe_files import inflate, read_user_file, size_setting
from .stacks import Frame
from ..text_escape import one_line

__all__ = [
    "SnapshotError",
    "Block",
    "load_snapshot",
    "live_blocks",
    "clean_stack",
    "summary_totals",
    "diff_snapshots",
    "per_round_series",
    "diff_series",
    "growth_accounting",
    "NO_STACK",
]

SnapshotLike = Union[dict, str, os.PathLike]

DEFAULT_POOL = (0, 0)
# Stack given to blocks allocated while history recording was off (torch stores no frames for them).
NO_STACK = (Frame("<no stack recorded>", "<unknown>", 0),)


class SnapshotError(UsageError):
    """A file that is not a loadable torch memory snapshot. The message is one line and names the file.

    A ``ValueError`` (through ``tracer.errors.UsageError``: the CLI shows it as one line, exit code 2).
    """


# --------------------------------------------------------------------------------------------------------
# Loading


class _PlainDataUnpickler(pickle.Unpickler):
    """The C unpickler with every global refused: only plain containers and scalars can come out of it.

    Every way a pickle can reach a callable (GLOBAL, STACK_GLOBAL, INST, the copyreg extension opcodes)
    goes through ``find_class``; OBJ and REDUCE need a callable that only ``find_class`` could have made.
    Persistent ids are refused too.
    """

    def __init__(self, file, name: str):
        super().__init__(file)
        self._name = name

    def find_class(self, module, name):  # noqa: D401 - pickle API
        raise SnapshotError(
            f"refusing to load {self._name}: the pickle asks for global {one_line(f'{module}.{name}')[:120]}; "
            "snapshot files hold only plain data"
        )

    def persistent_load(self, pid):
        raise SnapshotError(
            f"refusing to load {self._name}: the pickle uses a persistent id; snapshot files hold only plain data"
        )


@contextmanager
def _gc_paused():
    """Pause the cyclic GC: building ~10^5 containers otherwise triggers it over and over (3x slower loads)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_snapshot(path: str | os.PathLike) -> dict:
    """Load a torch CUDA memory snapshot: a pickle (what ``_dump_snapshot`` writes) or JSON, plain or gzip.

    The format is found from the content's first bytes, not from the file name. A bare list of segments
    (what ``torch.cuda.memory_snapshot()`` returns) is accepted and wrapped as ``{"segments": [...]}``.
    Raises ``SnapshotError`` (one line, naming the file) for an unreadable file, truncated or corrupt data,
    a pickle that asks for any global, and data that is not a snapshot (no ``segments`` list of segments).
    """
    return _parse(*_read(path))


def _read(path: str | os.PathLike) -> tuple[str, bytes]:
    """The file's bytes, gunzipped when they start with the gzip magic. Runs in a prefetch thread too."""
    name = os.fspath(path)
    try:
        data = read_user_file(name, "snapshot")
        if data[:2] == b"\x1f\x8b":
            data = inflate(data, name)  # bounded; zlib lets go of the GIL while it inflates
    except UsageError as exc:
        raise SnapshotError(str(exc)) from None
    return name, data


_LEADING_SPACE = re.compile(rb"\s*")


def _parse(name: str, data: bytes) -> dict:
    start = _LEADING_SPACE.match(data).end()
    head = data[start:start + 1]
    if not head:
        raise SnapshotError(f"cannot load {name}: no data (empty file)")
    with _gc_paused():
        if head in (b"{", b"["):
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise SnapshotError(f"cannot load {name}: not valid JSON ({_one_line(exc)})") from None
        else:
            try:
                obj = _PlainDataUnpickler(io.BytesIO(data), name).load()
            except SnapshotError:
                raise
            except (pickle.UnpicklingError, EOFError) as exc:
                what = "truncated" if isinstance(exc, EOFError) or "truncated" in str(exc) else "corrupt"
                raise SnapshotError(
                    f"cannot load {name}: not a snapshot pickle or JSON, or {what} ({_one_line(exc)})"
                ) from None
            except Exception as exc:  # garbage bytes make the unpickler fail in many ways
                raise SnapshotError(
                    f"cannot load {name}: not a snapshot pickle or JSON ({type(exc).__name__}: {_one_line(exc)})"
                ) from None
    return _check_snapshot(obj, name)


# Blocks (summed over segments) above which a snapshot is refused: a pickle can share one list of blocks between
# many segments by reference, so a file of a few hundred bytes can stand for millions of rows.
MAX_BLOCKS_ENV = "TRACER_MAX_SNAPSHOT_BLOCKS"
DEFAULT_MAX_BLOCKS = 2_000_000
MAX_FRAMES = 10_000  # frames of one block's stack (real ones, C++ frames included, have a few hundred)
_MAX = 2**63
_SEGMENT_SIZES = ("total_size", "allocated_size", "active_size", "requested_size")


def _is_count(v) -> bool:
    return type(v) is int and 0 <= v < _MAX


def _is_small_int(v) -> bool:
    return type(v) is int and -_MAX < v < _MAX


def _check_snapshot(obj, name: str) -> dict:
    if isinstance(obj, list) and obj and all(isinstance(s, dict) and "blocks" in s for s in obj):
        obj = {"segments": obj}
    if not isinstance(obj, dict):
        raise SnapshotError(
            f"cannot load {name}: not a torch memory snapshot (top level is a {type(obj).__name__}, "
            "expected a dict with a 'segments' list)"
        )
    segments = obj.get("segments")
    if not isinstance(segments, list):
        keys = ", ".join(one_line(k)[:40] for k in sorted(k for k in obj if isinstance(k, str))[:6])
        raise SnapshotError(f"cannot load {name}: not a torch memory snapshot (no 'segments' list; keys: {keys})")
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict) or not isinstance(seg.get("blocks"), list):
            raise SnapshotError(f"cannot load {name}: segment {i} is not a dict with a 'blocks' list")
    limit = size_setting(MAX_BLOCKS_ENV, DEFAULT_MAX_BLOCKS)
    if sum(len(seg["blocks"]) for seg in segments) > limit:
        raise SnapshotError(f"cannot load {name}: more than {limit} blocks (lists shared by reference count once "
                            f"per use); refused (set {MAX_BLOCKS_ENV} to allow more)")
    for i, seg in enumerate(segments):
        _check_segment(seg, i, name)
    return obj


def _check_segment(seg: dict, i: int, name: str) -> None:
    """Types and ranges of what the diff reads, checked before anything hashes or prints them: a value nested a
    million levels deep would overflow the C stack when hashed, and NaN or a negative size must not add up."""
    bad = next((k for k in _SEGMENT_SIZES if k in seg and not _is_count(seg[k])), None)
    if bad is None:
        bad = next((k for k in ("device", "stream") if seg.get(k) is not None and not _is_small_int(seg[k])), None)
    pool = seg.get("segment_pool_id")
    if bad is None and pool is not None and not (
            _is_small_int(pool) or (type(pool) in (list, tuple) and len(pool) <= 8 and all(map(_is_small_int, pool)))):
        bad = "segment_pool_id"
    if bad is not None:
        raise SnapshotError(f"cannot load {name}: segment {i} has a bad {bad} (an integer in range is expected)")
    for j, b in enumerate(seg["blocks"]):
        if type(b) is not dict or type(b.get("state")) is not str or not _is_count(b.get("size")) or not (
                _is_count(b.get("address", 0)) and _is_count(b.get("requested_size", 0))):
            raise SnapshotError(f"cannot load {name}: block {j} of segment {i} is not a block (state text, size, "
                                "address and requested_size integers from 0 to 2**63)")
        frames = b.get("frames")
        if frames is not None and (type(frames) not in (list, tuple) or len(frames) > MAX_FRAMES):
            raise SnapshotError(f"cannot load {name}: block {j} of segment {i} has a bad frames list "
                                f"(a list of at most {MAX_FRAMES} frames is expected)")


def _as_snapshot(snapshot: SnapshotLike) -> dict:
    if isinstance(snapshot, dict):
        return snapshot
    return load_snapshot(snapshot)


def _snapshots(items: list[SnapshotLike]) -> Iterator[dict]:
    """The snapshots in order; a path's file is read and gunzipped in a thread while the one before is used."""
    items = list(items)
    if sum(not isinstance(x, dict) for x in items) < 2:
        yield from map(_as_snapshot, items)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="tracer-snapshot-read") as pool:
        ahead = {}

        def prefetch(i: int) -> None:
            if i < len(items) and not isinstance(items[i], dict):
                ahead[i] = pool.submit(_read, items[i])

        prefetch(0)
        for i, item in enumerate(items):
            prefetch(i + 1)
            yield item if isinstance(item, dict) else _parse(*ahead.pop(i).result())


# --------------------------------------------------------------------------------------------------------
# Stacks

# Leading native frames that are the unwinder and the caching allocator itself (stacks="all").
_ALLOCATOR = re.compile(
    r"(torch::unwind::|CapturedTraceback|gather_with_cpp|CachingAllocator|CUDAAllocator|c10::cuda::MemPool|"
    r"c10::Allocator|c10::cuda::CUDAPluggableAllocator|c10::cuda::CUDAMallocAsyncAllocator)"
)
# Native frames of the interpreter, libc and the python<->C++ binding glue: they say nothing about the owner,
# and torch interleaves them with Python frames in a way that differs between otherwise identical stacks.
_NATIVE_NOISE = re.compile(
    r"^(_?Py[A-Z_]\w*|_?PyEval\w*|__libc_\w+|_start$|start_thread$|clone3?$|\?\?$|"
    r"method_vectorcall\w*|cfunction_\w+|slot_tp_\w+|vectorcall_\w+|builtin_\w+|"
    r"torch::autograd::THP\w+|torch::autograd::utils::wrap|torch::PythonArgParser|THP\w+|pybind11::|"
    r"torch::detail::wrap_pybind_function|torch::jit::invokeOperatorFromPython|torch::impl::dispatch)"
)


def _is_python(frame: Frame) -> bool:
    return frame.file.endswith(".py") or (frame.file.startswith("<") and frame.line > 0)


def clean_stack(frames: Iterable[Frame]) -> tuple[Frame, ...]:
    """The stack used for grouping: frames as recorded, innermost first, less native noise.

    Python-only stacks (``stacks="python"``) come back unchanged. In mixed stacks (``stacks="all"``) the leading
    unwinder/allocator frames (``torch::unwind::unwind``, ``CapturedTraceback::gather``,
    ``DeviceCachingAllocator::malloc``, ...) are cut, and interpreter, libc and binding-glue frames
    (``_PyEval_EvalFrameDefault``, ``PyObject_Call``, ``__libc_start_main``, ``THPVariable_cat``, ...) are
    dropped wherever they are. ATen/c10 frames stay (``tracer.analysis.stacks.is_plumbing`` skips them when finding the
    owner) and so do other native frames (a custom op's C++ function, ``at::cuda::getCUDABlasLtWorkspace``).
    """
    frames = tuple(frames)
    native = [not _is_python(f) for f in frames]
    if not any(native):
        return frames
    first_python = native.index(False) if False in native else len(frames)
    cut = 0
    for i in range(first_python):
        if _ALLOCATOR.search(frames[i].function):
            cut = i + 1
    kept = tuple(f for f, nat in zip(frames[cut:], native[cut:]) if not (nat and _NATIVE_NOISE.match(f.function)))
    return kept or frames  # nothing but allocator frames: keep them rather than lose the stack


class _Interner:
    """Frames and stacks seen in one analysis, shared by all its snapshots so that stack ids compare.

    ``raw`` stacks are the frames exactly as recorded (used for block identity); ``clean`` stacks are
    ``clean_stack`` of those (used for grouping). Both are tuples of shared ``Frame`` objects.
    """

    def __init__(self):
        self._frame_idx: dict[tuple, int] = {}
        self.frames: list[Frame] = []
        self._raw_idx: dict[tuple[int, ...], int] = {}
        self.raw: list[tuple[Frame, ...]] = []
        self.clean_of_raw: list[int] = []
        self._clean_idx: dict[tuple[int, ...], int] = {}
        self.clean: list[tuple[Frame, ...]] = []
        self._ids: dict[int, str] = {}

    def frame(self, d) -> int:
        if not isinstance(d, dict):
            raise SnapshotError(f"malformed snapshot: a frame is a {type(d).__name__}, expected a dict")
        fn, file, line = d.get("name"), d.get("filename"), d.get("line")
        if not (type(fn) in (str, type(None)) and type(file) in (str, type(None))):
            raise SnapshotError("malformed snapshot: a frame's name or filename is not text")
        key = (fn, file, line if type(line) is int and -_MAX < line < _MAX else 0)  # hashable without recursion
        idx = self._frame_idx.get(key)
        if idx is None:
            idx = self._frame_idx[key] = len(self.frames)
            self.frames.append(Frame(fn if fn is not None else "?", file if file is not None else "?", key[2]))
        return idx

    def raw_stack(self, frame_ids: tuple[int, ...]) -> int:
        idx = self._raw_idx.get(frame_ids)
        if idx is None:
            idx = self._raw_idx[frame_ids] = len(self.raw)
            frames = tuple(self.frames[i] for i in frame_ids)
            self.raw.append(frames)
            cleaned = clean_stack(frames) if frames else ()
            ckey = tuple(map(id, cleaned))  # cleaned frames are interned: identity is content
            cidx = self._clean_idx.get(ckey)
            if cidx is None:
                cidx = self._clean_idx[ckey] = len(self.clean)
                self.clean.append(cleaned)
            self.clean_of_raw.append(cidx)
        return idx

    def finding_id(self, clean_idx: int) -> str:
        fid = self._ids.get(clean_idx)
        if fid is None:
            fid = self._ids[clean_idx] = Finding("gpu", self.clean[clean_idx] or NO_STACK, 0, 0).id
        return fid


# A scanned live block: ((device, address, size, raw_stack_id), requested_size, stream, pool_id).
# The first element is the block's identity for the diff.
_Row = tuple


def _pool(value) -> tuple:
    if value is None:
        return DEFAULT_POOL
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _scan(snapshot: dict, interner: _Interner) -> list[_Row]:
    """Rows for every active_allocated block. Runs once per block; frames are converted once per stack.

    In a loaded pickle the frame dicts are shared between blocks (the pickle memo), each block having its own
    list of them. The hot path keys a block's list by its length and the objects at its two middle positions
    (two, because ``stacks="all"`` alternates Python and interpreter frames) and checks the first list seen
    with that key by list equality, which C compares by identity first: no per-frame Python work. On a
    mismatch the exact key, the ids of all frame dicts, decides; only unseen stacks are converted, frame
    dict by frame dict, to interned ``Frame``s. Lists with equal content but other dict objects (JSON) still
    match, more slowly. The id-keyed caches live for this call only, while the snapshot keeps the objects alive.
    """
    rows: list[_Row] = []
    append = rows.append
    primary: dict[tuple, tuple] = {}  # (len, id(frames[mid]), id(frames[mid - 1])) -> (frames list, raw id)
    by_ids: dict[tuple[int, ...], int] = {}  # ids of all frame dicts -> raw id
    frame_of_dict: dict[int, int] = {}
    intern_frame = interner.frame
    no_frames = interner.raw_stack(())

    def stack_of(frames, sig) -> int:
        if not isinstance(frames, (list, tuple)):
            raise SnapshotError(f"malformed snapshot: block frames are a {type(frames).__name__}, expected a list")
        ids = tuple(map(id, frames))
        k = by_ids.get(ids)
        if k is None:
            fids = []
            for d in frames:
                fi = frame_of_dict.get(id(d))
                if fi is None:
                    fi = frame_of_dict[id(d)] = intern_frame(d)
                fids.append(fi)
            k = by_ids[ids] = interner.raw_stack(tuple(fids))
        primary.setdefault(sig, (frames, k))
        return k

    for si, seg in enumerate(snapshot["segments"]):
        device = seg.get("device", 0)
        stream = seg.get("stream", 0)
        pool = _pool(seg.get("segment_pool_id"))
        try:
            for b in seg["blocks"]:
                if b["state"] != "active_allocated":
                    continue
                frames = b.get("frames")
                if frames is None:  # torch <= 2.0 kept frames under history[-1]
                    hist = b.get("history") or [{}]
                    frames = hist[-1].get("frames")
                if frames:
                    n = len(frames)
                    sig = (n, id(frames[n >> 1]), id(frames[(n >> 1) - 1]))
                    hit = primary.get(sig)
                    k = hit[1] if hit is not None and hit[0] == frames else stack_of(frames, sig)
                else:
                    k = no_frames
                size = b["size"]
                append(((device, b["address"], size, k), b.get("requested_size", size), stream, pool))
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {_one_line(exc)}"
            raise SnapshotError(f"malformed snapshot: a block in segment {si} is not a block ({what})") from None
    return rows


# --------------------------------------------------------------------------------------------------------
# Blocks and totals


class Block(NamedTuple):
    """One live (``active_allocated``) block.

    ``frames``: as recorded, innermost first (empty when history recording was off at allocation time);
    ``stack``: ``clean_stack(frames)``, what findings group by.
    """

    address: int
    size: int
    requested_size: int
    stream: int
    device: int
    pool_id: tuple
    in_graph_pool: bool
    frames: tuple[Frame, ...]
    stack: tuple[Frame, ...]


def live_blocks(snapshot: SnapshotLike) -> list[Block]:
    """Every ``active_allocated`` block of every segment, in snapshot order."""
    snap = _as_snapshot(snapshot)
    interner = _Interner()
    with _gc_paused():
        rows = _scan(snap, interner)
        raw, clean, clean_of_raw = interner.raw, interner.clean, interner.clean_of_raw
        return [
            Block(addr, size, req, stream, dev, pool, pool != DEFAULT_POOL, raw[k], clean[clean_of_raw[k]])
            for (dev, addr, size, k), req, stream, pool in rows
        ]


def summary_totals(snapshot: SnapshotLike) -> dict:
    """Allocator totals from the segments, in bytes, summed over devices.

    ``allocated_bytes``: sum of segments' ``allocated_size`` (torch sums the sizes of the segment's
    ``active_allocated`` blocks; it is what ``torch.cuda.memory_allocated`` reports); ``active_bytes`` adds
    blocks freed but waiting on a stream event (``active_pending_free``); ``reserved_bytes``: sum of segment
    ``total_size`` (``memory_reserved``); ``requested_bytes``: segments' ``requested_size``. Also
    ``live_block_bytes`` (recomputed from the blocks: equals ``allocated_bytes`` in a consistent snapshot),
    ``graph_pool_reserved_bytes``, and counts.
    """
    snap = _as_snapshot(snapshot)
    t = dict.fromkeys(("allocated_bytes", "reserved_bytes", "active_bytes", "requested_bytes",
                       "live_block_bytes", "live_blocks", "graph_pool_reserved_bytes"), 0)
    t["segments"] = len(snap["segments"])
    for seg in snap["segments"]:
        blocks = seg["blocks"]
        live = [b["size"] for b in blocks if b.get("state") == "active_allocated"]
        live_bytes = sum(live)
        t["live_block_bytes"] += live_bytes
        t["live_blocks"] += len(live)
        t["allocated_bytes"] += seg.get("allocated_size", live_bytes)
        t["active_bytes"] += seg.get("active_size", sum(
            b["size"] for b in blocks if str(b.get("state", "")).startswith("active")))
        t["requested_bytes"] += seg.get("requested_size", 0)
        total = seg.get("total_size", sum(b["size"] for b in blocks))
        t["reserved_bytes"] += total
        if _pool(seg.get("segment_pool_id")) != DEFAULT_POOL:
            t["graph_pool_reserved_bytes"] += total
    return t


# --------------------------------------------------------------------------------------------------------
# Diffs


def _new_rows(base_keys: set, rows: list[_Row]) -> list[_Row]:
    return [r for r in rows if r[0] not in base_keys]


def _findings(new: list[_Row], interner: _Interner) -> list[Finding]:
    groups: dict[int, list] = {}  # clean stack id -> [bytes, count, requested, graph_bytes, streams, devices]
    clean_of_raw = interner.clean_of_raw
    for (dev, _addr, size, k), req, stream, pool in new:
        c = clean_of_raw[k]
        g = groups.get(c)
        if g is None:
            g = groups[c] = [0, 0, 0, 0, set(), set()]
        g[0] += size
        g[1] += 1
        g[2] += req
        if pool != DEFAULT_POOL:
            g[3] += size
        g[4].add(stream)
        g[5].add(dev)

    findings: list[Finding] = []
    details_by_id: dict[str, dict] = {}
    for c, (nbytes, count, req, graph_bytes, streams, devices) in groups.items():
        stack = interner.clean[c] or NO_STACK
        f = Finding(domain="gpu", stack=stack, bytes=nbytes, count=count)
        findings.append(f)
        d = details_by_id.get(f.id)
        if d is None:
            details_by_id[f.id] = d = {"in_graph_pool": False, "graph_pool_bytes": 0, "requested_bytes": 0,
                                       "streams": set(), "devices": set(), "stacks": 0,
                                       "stack_recorded": True}
        d["graph_pool_bytes"] += graph_bytes
        d["in_graph_pool"] = d["graph_pool_bytes"] > 0
        d["requested_bytes"] += req
        d["streams"] |= streams
        d["devices"] |= devices
        d["stacks"] += 1
        d["stack_recorded"] = d["stack_recorded"] and bool(interner.clean[c])

    merged = merge_by_id(findings)
    for f in merged:
        d = dict(details_by_id[f.id])
        d["streams"] = sorted(d["streams"])
        d["devices"] = sorted(d["devices"])
        f.details = d
    return merged


def diff_snapshots(baseline: SnapshotLike, final: SnapshotLike) -> list[Finding]:
    """GPU blocks live in ``final`` that were not live in ``baseline``, grouped by allocation stack.

    Identity of a block: (device, address, size, recorded frames). A block at the same address and size in
    both snapshots is the same allocation only if its frames are identical too; otherwise the baseline one was
    freed and a new one allocated in its place. What this still cannot tell apart: an allocation that was freed
    and allocated again between the two snapshots at the same address, with the same size, from the same stack
    (a fixed-size buffer re-made by the same line every round, which the caching allocator likes to hand the
    same block). It counts as the same block: neither new nor freed, so byte totals are unaffected but that
    call site shows no churn. The same holds for blocks without frames (allocated while history recording was
    off), for which identity is address and size only, and for ``stacks="python"`` captures, where two C++ paths
    under the same Python line look alike. The trace ring (``device_traces``) could settle the first case when it
    still covers the interval, but it wraps within a few rounds (200,000 entries), so it is not used.

    Findings (domain ``"gpu"``): one per ``clean_stack`` of the new blocks, then ``merge_by_id`` (stacks that
    differ only in line numbers or deep frames are merged). ``bytes``/``count``: the blocks' sizes and number;
    ``details``: ``in_graph_pool`` (some of the bytes sit in a CUDA-graph private pool, pool id != (0, 0)),
    ``graph_pool_bytes``, ``requested_bytes`` (sizes asked for, before the allocator's rounding), ``streams``,
    ``devices``, ``stacks`` (distinct clean stacks merged), ``stack_recorded`` (False: ``NO_STACK`` stands in).
    ``per_round_bytes`` is empty (see ``diff_series``). Sorted by bytes, largest first.
    """
    return _series(baseline, [final])[0]


def _series(baseline: SnapshotLike, rounds: list[SnapshotLike]) -> tuple[list[Finding], dict[str, list[int]]]:
    if not rounds:
        raise ValueError("need at least one snapshot after the baseline")
    interner = _Interner()
    series: dict[str, list[int]] = {}
    n = len(rounds)
    new: list[_Row] = []
    with _gc_paused():
        snaps = _snapshots([baseline, *rounds])  # paths: loaded one at a time, the next one read ahead
        base_keys = set(map(itemgetter(0), _scan(next(snaps), interner)))
        for k, snap in enumerate(snaps):
            new = _new_rows(base_keys, _scan(snap, interner))
            del snap
            for (_dev, _addr, size, raw), _req, _stream, _pool in new:
                fid = interner.finding_id(interner.clean_of_raw[raw])
                s = series.get(fid)
                if s is None:
                    s = series[fid] = [0] * n
                s[k] += size
        return _findings(new, interner), series


def per_round_series(baseline: SnapshotLike, rounds: list[SnapshotLike]) -> dict[str, list[int]]:
    """Finding id -> bytes of that group's blocks that are new since ``baseline`` and live in ``rounds[k]``.

    Every group that has new blocks in any round is listed, including groups whose blocks were all freed by
    the last snapshot. Paths are loaded one at a time, so a long series need not fit in memory at once.
    """
    return _series(baseline, rounds)[1]


def diff_series(baseline: SnapshotLike, rounds: list[SnapshotLike]) -> list[Finding]:
    """``diff_snapshots(baseline, rounds[-1])`` with ``per_round_bytes[k]`` = the finding's new-since-baseline
    bytes live in ``rounds[k]`` (so ``per_round_bytes[-1] == bytes``)."""
    findings, series = _series(baseline, rounds)
    for f in findings:
        f.per_round_bytes = series[f.id]
    return findings


def growth_accounting(baseline: SnapshotLike, final: SnapshotLike) -> dict:
    """How the diff's blocks explain the change in allocated bytes.

    With ``new`` the blocks live in ``final`` and not in ``baseline`` (the findings' blocks) and ``freed`` the
    blocks live in ``baseline`` and not in ``final`` (same identity rule), the identity

        new_bytes - freed_bytes == allocated_growth == allocated(final) - allocated(baseline)

    holds exactly when each snapshot's segment ``allocated_size`` values sum its ``active_allocated`` blocks
    (torch builds them that way), because blocks matched in both snapshots cancel. ``new_bytes`` equals the sum
    of ``diff_snapshots`` findings' bytes. ``residual`` = new - freed - growth (0 for consistent snapshots).
    """
    interner = _Interner()
    with _gc_paused():
        base, fin = _snapshots([baseline, final])
        base_rows, fin_rows = _scan(base, interner), _scan(fin, interner)
    base_keys = set(map(itemgetter(0), base_rows))
    fin_keys = set(map(itemgetter(0), fin_rows))
    new = [r[0][2] for r in fin_rows if r[0] not in base_keys]
    freed = [r[0][2] for r in base_rows if r[0] not in fin_keys]
    growth = summary_totals(fin)["allocated_bytes"] - summary_totals(base)["allocated_bytes"]
    return {
        "new_bytes": sum(new),
        "new_blocks": len(new),
        "freed_bytes": sum(freed),
        "freed_blocks": len(freed),
        "allocated_growth": growth,
        "residual": sum(new) - sum(freed) - growth,
    }
