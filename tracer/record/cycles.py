"""Reference cycles in the traced process's garbage, described before the collector frees them.

vLLM freezes the GC heap at engine start, so full collections are rare and objects caught in a reference cycle
pile up between them. The final drain ends with a collection; just before it, `inspect_garbage` collects once
with `gc.DEBUG_SAVEALL` (the unreachable objects are kept in `gc.garbage` instead of freed), finds the strongly
connected components of that garbage, names one cycle of each shape as a path of attributes and items
(`Request.get_hash_new_full_blocks -> partial.args[0] -> Request`), lists the object types each shape keeps
alive, and the addresses of the memory those objects own, so the analysis can tie a shape to the allocation
group it holds. Then it lets the garbage go, and the drain's own collection frees it.
"""

from __future__ import annotations

import functools
import gc
import sys
import types
from collections import Counter, deque

from .holders import _addresses, _children

MAX_SHAPES = 20
MAX_ADDRESSES = 5000  # per shape: enough to match a group, bounded for cycles.json
_CONTAINERS = (dict, list, tuple, set, frozenset, deque)


def inspect_garbage(max_objects: int = 500_000) -> dict:
    """Collect once, keeping the garbage, and describe it: {"objects", "types", "cycles": [shape, ...]}."""
    before = len(gc.garbage)
    old = gc.get_debug()
    gc.set_debug(old | gc.DEBUG_SAVEALL)
    try:
        gc.collect()
    finally:
        gc.set_debug(old)
    garbage = gc.garbage[before:]
    del gc.garbage[before:]
    try:
        return describe(garbage[:max_objects])
    finally:
        garbage.clear()


def describe(garbage: list) -> dict:
    """The shapes of the reference cycles among `garbage` (objects no root reaches)."""
    by_id = {id(o): o for o in garbage}
    edges = {i: [id(r) for r in gc.get_referents(o) if id(r) in by_id] for i, o in by_id.items()}
    # what each cycle keeps, read before naming paths: reading an instance's __dict__ to name an attribute makes
    # CPython build a dict object in place of its inline values, and the objects behind it would look unreachable
    cycles = []
    for component in strongly_connected(edges):
        if len(component) == 1 and component[0] not in edges[component[0]]:
            continue
        kept = [by_id[i] for i in _reachable(component, edges)]
        cycles.append((component, kept + _untracked_referents(kept)))
    shapes: dict[str, dict] = {}
    for component, kept in cycles:
        members = {i: by_id[i] for i in component}
        path = cycle_path(_representative(members.values()), members)
        shape = shapes.setdefault(path, {"path": path, "cycles": 0, "objects": 0, "bytes": 0, "types": Counter(),
                                         "addresses": []})
        shape["cycles"] += 1
        shape["objects"] += len(kept)
        for obj in kept:
            if not isinstance(obj, (int, float, str, bool)):  # scalars: many, and they say little
                shape["types"][_name(obj)] += 1
            shape["bytes"] += _size(obj)
            if len(shape["addresses"]) < MAX_ADDRESSES:
                shape["addresses"] += [a for domain, a in _addresses(obj) if domain == "host"]
    ordered = sorted(shapes.values(), key=lambda s: (-s["bytes"], s["path"]))[:MAX_SHAPES]
    for shape in ordered:
        shape["types"] = dict(shape["types"].most_common(10))
    return {"objects": len(garbage), "types": dict(Counter(_name(o) for o in garbage).most_common(15)),
            "cycles": ordered}


def strongly_connected(edges: dict[int, list[int]]) -> list[list[int]]:
    """Tarjan's strongly connected components, iteratively (garbage graphs can be deep)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
    return out


def labelled_referents(obj):
    """(label, child) pairs: attributes, items, a partial's function and arguments, a method's self."""
    if isinstance(obj, functools.partial):
        yield ".func", obj.func
        for i, arg in enumerate(obj.args):
            yield f".args[{i}]", arg
        for key, value in (obj.keywords or {}).items():
            yield f".keywords[{key!r}]", value
        return
    if isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        yield ".__func__", obj.__func__
        return
    if isinstance(obj, types.CellType):
        try:
            yield ".cell_contents", obj.cell_contents
        except ValueError:
            pass
        return
    labelled = list(_children(obj))
    yield from labelled
    if not labelled:
        for child in gc.get_referents(obj):
            yield f"<{type(child).__name__}>", child


def cycle_path(rep, members: dict[int, object]) -> str:
    """The shortest path of references from `rep` back to itself inside its component, as text."""
    parent: dict[int, tuple[int, str, object]] = {}
    queue = deque([rep])
    seen = {id(rep)}
    while queue:
        obj = queue.popleft()
        for label, child in _safe_referents(obj):
            if child is rep:
                steps = [(label, child)]
                node = obj
                while node is not rep:
                    prev, prev_label, _ = parent[id(node)]
                    steps.append((prev_label, node))
                    node = members[prev]
                return _format(rep, list(reversed(steps)))
            if id(child) in members and id(child) not in seen:
                seen.add(id(child))
                parent[id(child)] = (id(obj), label, child)
                queue.append(child)
    return f"{_name(rep)} -> ... -> {_name(rep)}"


def _safe_referents(obj):
    try:
        return list(labelled_referents(obj))
    except Exception:  # noqa: BLE001 - a property or container that refuses to be read
        return [(f"<{type(c).__name__}>", c) for c in gc.get_referents(obj)]


def _format(rep, steps) -> str:
    """`Type.attr -> Type.attr[0] -> Type`: a new segment at every object that is not a builtin container."""
    text = _name(rep)
    for label, child in steps:
        text += label
        if child is not rep and not isinstance(child, _CONTAINERS):
            text += " -> " + _name(child)
    return text + " -> " + _name(rep)


_PLUMBING = (functools.partial, types.MethodType, types.FunctionType, types.CellType, *_CONTAINERS)


def _representative(objects):
    """A member that is an instance of a user or library class (what a reader knows), else any member."""
    objects = list(objects)
    plain = [o for o in objects if type(o).__module__ != "builtins" and not isinstance(o, _PLUMBING)]
    return (plain or objects)[0]


def _untracked_referents(objects: list) -> list:
    """Objects the collector does not track (bytes, bytearray, str, ...) that the garbage refers to: they are
    not in `gc.garbage`, yet the garbage keeps them alive."""
    seen, out = set(), []
    for obj in objects:
        for child in gc.get_referents(obj):
            if not gc.is_tracked(child) and id(child) not in seen:
                seen.add(id(child))
                out.append(child)
    return out


def _size(obj) -> int:
    """Bytes an object owns: its own size, and a tensor's storage."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        try:
            return sys.getsizeof(obj) + obj.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass
    try:
        return sys.getsizeof(obj)
    except TypeError:
        return 0


def _reachable(component: list[int], edges: dict[int, list[int]]) -> set[int]:
    seen = set(component)
    queue = deque(component)
    while queue:
        for child in edges[queue.popleft()]:
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return seen


def _name(obj) -> str:
    return type(obj).__name__
