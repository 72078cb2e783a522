"""Who keeps a leak alive: the chain of references from a named root to the leaked object.

Runs inside the traced process at the end of a run, while the leaked objects still exist. The leaked memory is
known by address (memray's raw records for host groups, the final snapshot's blocks for GPU groups); a
breadth-first walk over references from named roots (every module's globals, and the `LLM` object as `llm`)
finds the objects that own those addresses (tensor storages, numpy buffers, bytes, bytearrays, any object by
its id) and names the shortest path to each, e.g. `myplugin._stash[3]` or `llm.llm_engine....cache['k']`.
"""

from __future__ import annotations

import bisect
import ctypes
import gc
import sys
import time
import types
import warnings
from collections import deque

from ..capture import MAIN_ROLE

MAX_PATHS = 3
NATIVE_CALLS = {"_ctypes_callproc", "PyCFuncPtr_call"}  # a Python call straight into a native function


class AddressRanges:
    """Sorted, non-overlapping [start, start+size) ranges, each tagged with a finding id."""

    def __init__(self, ranges: list[tuple[int, int, str]]):
        ranges = sorted(r for r in ranges if r[1] > 0)
        self.starts = [r[0] for r in ranges]
        self.ranges = ranges

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def find(self, address: int) -> str | None:
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0:
            start, size, tag = self.ranges[i]
            if address < start + size:
                return tag
        return None


def _addresses(obj) -> list[tuple[str, int]]:
    """(domain, address) of the memory an object owns: its data buffer if it has one, and itself."""
    out = [("host", id(obj))]
    kind = type(obj)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        try:
            storage = obj.untyped_storage()
            if storage.nbytes():
                out.append(("gpu" if obj.is_cuda else "host", storage.data_ptr()))
        except (RuntimeError, NotImplementedError):  # meta, sparse or other storage-less tensors
            pass
    elif kind.__name__ == "ndarray" and hasattr(obj, "__array_interface__"):
        out.append(("host", obj.__array_interface__["data"][0]))
    elif kind is bytearray and len(obj):
        out.append(("host", ctypes.addressof((ctypes.c_char * 1).from_buffer(obj))))
    elif _CPYTHON_LAYOUT:
        out += [("host", a) for a in container_storage(obj)]
    return out


# CPython 3.11-3.13 (with the GIL) object layouts, read with ctypes: the header is refcount and type (16 bytes),
# variable-size objects add ob_size (24).
_CPYTHON_LAYOUT = (sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 13)
                   and getattr(sys, "_is_gil_enabled", lambda: True)())
_LIST_ITEMS = 24  # PyListObject.ob_item
_DICT_KEYS, _DICT_VALUES = 32, 40  # PyDictObject.ma_keys, ma_values
_DEQUE_LEFT, _DEQUE_RIGHT = 24, 32  # dequeobject.leftblock, rightblock
_DEQUE_BLOCK_LINK = 8 + 64 * 8  # block.rightlink, after leftlink and 64 item pointers
_MAX_DEQUE_BLOCKS = 10_000


def container_storage(obj) -> list[int]:
    """Addresses of the memory a builtin container keeps outside its object header: a list's item array, a
    dict's key table and values, an array.array's buffer, a deque's blocks. A growing list of ints is one
    realloc'd item array; this lets it be named as a holder."""
    kind = type(obj)
    if kind is list:
        return _pointer(obj, _LIST_ITEMS) if len(obj) else []
    if kind is dict:
        return _pointer(obj, _DICT_KEYS) + _pointer(obj, _DICT_VALUES)
    if kind.__name__ == "array" and kind.__module__ == "array":
        return [obj.buffer_info()[0]] if len(obj) else []
    if kind is deque:
        blocks, block, last = [], _read_pointer(id(obj) + _DEQUE_LEFT), _read_pointer(id(obj) + _DEQUE_RIGHT)
        while block and len(blocks) < _MAX_DEQUE_BLOCKS:
            blocks.append(block)
            block = 0 if block == last else _read_pointer(block + _DEQUE_BLOCK_LINK)
        return blocks
    return []


def _read_pointer(address: int) -> int:
    return ctypes.c_void_p.from_address(address).value or 0


def _pointer(obj, offset: int) -> list[int]:
    value = _read_pointer(id(obj) + offset)
    return [value] if value else []


def _children(obj):
    """(label, child) pairs: item keys, attribute names, indexes; other referents unlabelled."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            yield f"[{_key(key)}]", value
    elif isinstance(obj, (list, tuple, deque)):
        for i, value in enumerate(list(obj)):
            yield f"[{i}]", value
    elif isinstance(obj, (set, frozenset)):
        for value in list(obj):
            yield "{...}", value
    elif isinstance(obj, types.FunctionType):
        for i, cell in enumerate(obj.__closure__ or ()):
            try:
                yield f".__closure__[{i}]", cell.cell_contents
            except ValueError:  # an empty cell
                pass
    elif isinstance(obj, (str, bytes, int, float, type, types.ModuleType, types.BuiltinFunctionType)):
        return
    else:
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for name, value in list(attrs.items()):
                yield f".{name}", value
        for name in getattr(type(obj), "__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name):
                yield f".{name}", getattr(obj, name)
        if attrs is None and not hasattr(type(obj), "__slots__"):
            for child in gc.get_referents(obj):
                yield f"<{type(child).__name__}>", child


def _key(key) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def named_roots(extra: dict | None = None) -> list[tuple[str, object]]:
    """Every module's globals by qualified name, and the given objects (e.g. {"llm": llm})."""
    roots = list((extra or {}).items())
    for name, module in sorted(sys.modules.items()):
        attrs = getattr(module, "__dict__", None)
        if not isinstance(attrs, dict):
            continue
        for attr, value in list(attrs.items()):
            if not attr.startswith("__") and not isinstance(value, types.ModuleType):
                roots.append((f"{name}.{attr}", value))
    return roots


class ReferenceWalk:
    """Breadth-first over references from named roots, each object once, within an object count and a time limit:
    iterating yields (object, path from a root); `prune()` skips the children of the object just yielded."""

    def __init__(self, roots: list[tuple[str, object]], max_objects: int, max_seconds: float):
        self.seen: set[int] = set()
        self.queue = deque()
        for name, obj in roots:
            if id(obj) not in self.seen:
                self.seen.add(id(obj))
                self.queue.append((obj, name))
        self.max_objects, self.deadline = max_objects, time.monotonic() + max_seconds
        self.visited = 0
        self._pruned = False

    @property
    def exhausted(self) -> bool:
        """Every object reachable from the roots was seen."""
        return not self.queue

    def prune(self) -> None:
        self._pruned = True

    def __iter__(self):
        with warnings.catch_warnings():  # reading attributes trips deprecation warnings in some libraries
            warnings.simplefilter("ignore")
            while self.queue and self.visited < self.max_objects and time.monotonic() < self.deadline:
                obj, path = self.queue.popleft()
                self.visited += 1
                self._pruned = False
                yield obj, path
                if self._pruned:
                    continue
                try:
                    children = list(_children(obj))
                except Exception:  # noqa: BLE001 - a property or container that refuses to be read
                    continue
                for label, child in children:
                    if id(child) not in self.seen:
                        self.seen.add(id(child))
                        self.queue.append((child, path + label))


def find_holders(host: AddressRanges, gpu: AddressRanges, roots: list[tuple[str, object]],
                 max_objects: int = 3_000_000, max_seconds: float = 60.0,
                 stats: dict | None = None) -> dict[str, list[str]]:
    """Finding id -> up to MAX_PATHS reference paths from a root to an object owning its leaked memory. `stats`,
    when given, gets how many objects the walk visited and whether it saw every object reachable from the roots."""
    ranges = {"host": host, "gpu": gpu}
    found: dict[str, list[str]] = {}
    wanted = {tag for r in ranges.values() for _, _, tag in r.ranges}
    walk = ReferenceWalk(roots, max_objects, max_seconds)
    complete_at = None
    for obj, path in walk:
        for domain, address in _addresses(obj):
            tag = ranges[domain].find(address) if ranges[domain] else None
            if tag is not None and len(found.setdefault(tag, [])) < MAX_PATHS:
                found[tag].append(path)
                if complete_at is None and wanted <= found.keys():
                    complete_at = walk.visited
        if complete_at is not None and (walk.visited - complete_at > 20_000 or
                                        all(len(found[t]) >= MAX_PATHS for t in wanted)):
            break  # every leak has a holder; a few more objects only for other paths
    if stats is not None:
        stats.update(visited=walk.visited, exhausted=walk.exhausted)
    return found


def host_ranges(memray_path, sources: dict[tuple[int, int], str]) -> list[tuple[int, int, str]]:
    """Addresses still live at the end of the capture for the given (stack id, native stack id) groups."""
    import memray

    frees = {memray.AllocatorType.FREE, memray.AllocatorType.MUNMAP}
    frees |= {a for a in memray.AllocatorType if a.name == "PYMALLOC_FREE"}
    live: dict[int, tuple[int, str]] = {}
    reader = memray.FileReader(str(memray_path))
    for rec in reader.get_allocation_records():
        allocator = memray.AllocatorType(rec.allocator)
        if allocator in frees:
            live.pop(rec.address, None)
            continue
        tag = sources.get((rec.stack_id, rec.native_stack_id))
        if tag is not None:
            live[rec.address] = (rec.size, tag)
        else:
            live.pop(rec.address, None)  # the address was reused by another group
    reader.close()
    return [(address, size, tag) for address, (size, tag) in live.items()]


def gpu_ranges(snapshot_path, ids: set[str], role: str | None = None) -> list[tuple[int, int, str]]:
    """Blocks of the given GPU findings live in a snapshot (ids as the findings of process `role` have them)."""
    from ..analysis.snapshots import live_blocks
    from ..analysis.stacks import fingerprint

    return [(b.address, b.size, fid) for b in live_blocks(snapshot_path)
            if (fid := fingerprint("gpu", b.stack, role=role)) in ids]


def allocated_ranges(memray_path, sources: dict[tuple[int, int], str]) -> list[tuple[int, int, str]]:
    """Every address the given groups allocated during the capture (the last allocation at each address), freed
    or not: a cycle's memory is freed by the final collection, after its owners were described."""
    import memray

    seen: dict[int, tuple[int, str]] = {}
    reader = memray.FileReader(str(memray_path))
    for rec in reader.get_allocation_records():
        tag = sources.get((rec.stack_id, rec.native_stack_id))
        if tag is not None and rec.size:
            seen[rec.address] = (rec.size, tag)
    reader.close()
    return [(address, size, tag) for address, (size, tag) in seen.items()]


def match_cycles(garbage: dict, ranges: AddressRanges) -> dict[str, int]:
    """Finding id -> index of the cycle shape in `garbage` whose objects own the most of its addresses."""
    votes: dict[str, dict[int, int]] = {}
    for k, shape in enumerate(garbage.get("cycles", [])):
        for address in shape.get("addresses", []):
            tag = ranges.find(address)
            if tag is not None:
                votes.setdefault(tag, {}).setdefault(k, 0)
                votes[tag][k] += 1
    return {tag: max(counts, key=counts.get) for tag, counts in votes.items()}


def record_holders(capture_dir, extra_roots: dict, thresholds: dict | None = None,
                   rules_file: str | None = None, role: str = MAIN_ROLE) -> dict[str, list[str]]:
    """Analyse the capture so far with the run's own thresholds and rules; for every leak finding of this process
    find who holds it (holders.json), and tie every cycle finding to the cycle shape that held its memory
    (cycles.json)."""
    from ..analysis.analyze import analyze
    from ..analysis.components import load_rules
    from ..analysis.verdicts import CYCLE, LEAK, Thresholds
    from ..capture import CYCLES, HOLDER_MISSES, HOLDERS, read_capture
    from ..safe_files import write_json

    capture = read_capture(capture_dir)
    rules = load_rules(rules_file) if rules_file else ()
    own_role = role if capture.several_processes else None
    findings = [f for f in analyze(capture, Thresholds(**(thresholds or {})), rules).findings if f.role == own_role]
    leaks = [f for f in findings if f.verdict == LEAK]
    cycles = [f for f in findings if f.verdict == CYCLE and f.domain == "host"]
    memray_files = [p for stream in capture.streams_of("memray")
                    if stream.role == role and (p := capture.stream_file(stream)) is not None]
    garbage = capture.cycles()
    if cycles and garbage.get("cycles"):
        sources = {src: f.id for f in cycles for src in f.sources}
        ranges = [r for path in memray_files for r in allocated_ranges(path, sources)]
        garbage["findings"] = match_cycles(garbage, AddressRanges(ranges))
        write_json(capture.dir / CYCLES, garbage)
    if not leaks:
        return {}
    sources = {src: f.id for f in leaks if f.domain == "host" for src in f.sources}
    host = [r for path in memray_files if sources for r in host_ranges(path, sources)]
    snapshots = capture.snapshot_files(role)
    final = snapshots.get("drained") or next(reversed(capture.round_snapshot_files(role)), None)
    gpu_ids = {f.id for f in leaks if f.domain == "gpu"}
    gpu = gpu_ranges(final, gpu_ids, own_role) if gpu_ids and final else []
    stats: dict = {}
    holders = find_holders(AddressRanges(host), AddressRanges(gpu), named_roots(extra_roots), stats=stats)
    write_json(capture.dir / HOLDERS, holders)
    live = {tag for _, _, tag in host + gpu}
    write_json(capture.dir / HOLDER_MISSES, {f.id: why_no_holder(f, f.id in live, stats)
                                                    for f in leaks if f.id not in holders})
    return holders


def why_no_holder(finding, live: bool, stats: dict) -> str:
    """Why a leak has no holder chain, in a reader's words."""
    if not live:
        return "freed before the search: none of its allocations was still live when the run ended"
    owner = finding.owner
    if owner is None or not owner.file.endswith(".py") or any(fr.function in NATIVE_CALLS for fr in finding.stack):
        return ("native memory: allocated by native code for itself, not as the storage of a Python object the "
                "search knows (tensor storage, buffer, container storage)")
    if not stats.get("exhausted", False):
        return f"no path from a named root within the {stats.get('visited', 0)} objects the search had time for"
    return (f"no path from a named root: all {stats.get('visited', 0)} reachable objects were searched (held only "
            "by objects the search cannot see into, e.g. native state or a C extension)")
