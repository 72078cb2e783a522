"""Call stacks: frames, the owner frame, and fingerprints that survive line shifts."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..own_frames import driver_start, is_marker

# Frames that say *how* memory was allocated, not *who* wanted it: allocator and unwinder internals,
# torch's dispatch and module plumbing, Python's own machinery, and tracer itself.
_PLUMBING_FUNCTIONS = re.compile(
    r"^(torch::unwind|torch::CapturedTraceback|c10::|at::|CapturedTraceback|DeviceCachingAllocator|"
    r"c10d::|std::|_PyEval|PyEval|_PyObject|PyObject_|_PyFunction|PyVectorcall|method_vectorcall|"
    r"cfunction_|slot_tp_|_start|__libc|start_thread|clone3?$|\?\?$|<unknown>$|"
    r"ffi_call|_call_function_pointer|_ctypes_callproc|PyCFuncPtr_call)"
)
_PLUMBING_FILES = re.compile(
    r"(torch/_ops\.py|torch/nn/modules/module\.py|torch/utils/_contextlib\.py|torch/_tensor\.py|"
    r"torch/functional\.py|torch/_refs/|torch/_prims|torch/_decomp/|torch/_subclasses/|torch/overrides\.py|"
    r"torch/utils/_device\.py|torch/cuda/memory\.py|functools\.py|contextlib\.py|threading\.py|"
    r"^$|^\?\?$)"
)


@dataclass(frozen=True)
class Frame:
    """One stack frame. Stacks are tuples of frames, innermost first."""

    function: str
    file: str
    line: int

    def as_dict(self) -> dict:
        return {"function": self.function, "file": self.file, "line": self.line}

    @classmethod
    def from_dict(cls, d: dict) -> "Frame":
        return cls(str(d.get("function") or d.get("name") or "?"), str(d.get("file") or d.get("filename") or "?"),
                   int(d.get("line") or 0))

    def short(self) -> str:
        return f"{self.function} ({short_path(self.file)}:{self.line})"


_PACKAGE_ROOTS = ("vllm", "torch", "transformers", "tokenizers", "memray", "PIL", "numpy", "tracer")


def short_path(path: str) -> str:
    """The part of a path that names a module, dropping the install prefix (site-packages, a --target dir)."""
    path = path.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker)[-1]
    parts = path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in _PACKAGE_ROOTS:
            return "/".join(parts[i:])
    return "/".join(parts[-3:]) if len(parts) > 3 else path


_TRACER_PACKAGES = ("cli", "workload", "record", "analysis", "output")
_STDLIB = re.compile(r"/lib/python3(\.\d+)?/")


def module_key(path: str) -> str:
    """A file's identity for fingerprints: the same on every machine, checkout directory and Python version.

    Installed packages keep their module path (`vllm/v1/request.py`), the standard library drops its
    `lib/python3.X/` prefix, source checkouts of the known libraries start at the package (`vllm/...`), tracer's
    own modules are `tracer/<file>` (editable or installed), and any other file (a test, a --preload patch, a
    script) is named by its file name alone, since its directory depends on where the repository was cloned.
    """
    path = path.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker)[-1]
    stdlib = _STDLIB.search(path)
    if stdlib:
        return path[stdlib.end():]
    parts = path.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in _PACKAGE_ROOTS and parts[i] != "tracer":
            return "/".join(parts[i:])
    own = [i for i, part in enumerate(parts[:-1]) if part == "tracer"]
    if own and (own[-1] == len(parts) - 2 or parts[own[-1] + 1] in _TRACER_PACKAGES):
        return "/".join(parts[own[-1]:])
    return parts[-1]


def is_plumbing(frame: Frame) -> bool:
    """True for frames that only carry an allocation (allocator, dispatcher, interpreter, tracer's markers)."""
    return bool(is_marker(frame) or _PLUMBING_FUNCTIONS.match(frame.function)
                or _PLUMBING_FILES.search(frame.file.replace("\\", "/")))


def owner_index(stack: tuple[Frame, ...]) -> int:
    """Index of the innermost frame that is not plumbing: the code that asked for the memory."""
    for i, frame in enumerate(stack):
        if not is_plumbing(frame):
            return i
    return 0


def workload_frames(stack: tuple[Frame, ...]) -> tuple[Frame, ...]:
    """The stack up to tracer's driver (exclusive): what the workload's code did."""
    return stack[:driver_start(stack)] or stack


def fingerprint(domain: str, stack: tuple[Frame, ...], depth: int = 8, role: str | None = None) -> str:
    """A stable id for a group: domain plus function and module of `depth` frames from the owner outwards.

    Line numbers, addresses, install prefixes and checkout directories are left out (see `module_key`), and so
    are tracer's own driver frames, so the id survives unrelated edits, moves between machines and changes to
    tracer; that is what lets a CI baseline accept a finding once.
    """
    stack = workload_frames(stack)
    start = owner_index(stack)
    key = "|".join(f"{f.function}@{module_key(f.file)}" for f in stack[start:start + depth])
    scope = f"{role}/{domain}" if role else domain  # a process role, in captures of several processes
    return domain[0] + hashlib.sha1(f"{scope}:{key}".encode()).hexdigest()[:15]
