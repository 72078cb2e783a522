"""Call stacks: frames, the owner frame, and fingerprints that survive line shifts."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Frames that say *how* memory was allocated, not *who* wanted it: allocator and unwinder internals,
# torch's dispatch and module plumbing, Python's own machinery, and tracer itself.
_PLUMBING_FUNCTIONS = re.compile(
    r"^(torch::unwind|torch::CapturedTraceback|c10::|at::|CapturedTraceback|DeviceCachingAllocator|"
    r"c10d::|std::|_PyEval|PyEval|_PyObject|PyObject_|_PyFunction|PyVectorcall|method_vectorcall|"
    r"cfunction_|slot_tp_|_start|__libc|start_thread|clone3?$|\?\?$)"
)
_PLUMBING_FILES = re.compile(
    r"(torch/_ops\.py|torch/nn/modules/module\.py|torch/utils/_contextlib\.py|torch/_tensor\.py|"
    r"torch/functional\.py|torch/_refs/|torch/_prims|torch/_decomp/|torch/_subclasses/|torch/overrides\.py|"
    r"torch/utils/_device\.py|torch/cuda/memory\.py|functools\.py|contextlib\.py|threading\.py|"
    r"^$|^\?\?$|/tracer/(session|workload|host_trace|gpu_trace|probes|pytest_plugin)\.py$)"
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


def is_plumbing(frame: Frame) -> bool:
    """True for frames that only carry an allocation (allocator, dispatcher, interpreter, tracer itself)."""
    return bool(_PLUMBING_FUNCTIONS.match(frame.function) or _PLUMBING_FILES.search(frame.file.replace("\\", "/")))


def owner_index(stack: tuple[Frame, ...]) -> int:
    """Index of the innermost frame that is not plumbing: the code that asked for the memory."""
    for i, frame in enumerate(stack):
        if not is_plumbing(frame):
            return i
    return 0


def fingerprint(domain: str, stack: tuple[Frame, ...], depth: int = 8) -> str:
    """A stable id for a group: domain plus function and module of `depth` frames from the owner outwards.

    Line numbers, addresses and install prefixes are left out, so the id survives unrelated edits and moves
    between machines; that is what lets a CI baseline accept a finding once.
    """
    start = owner_index(stack)
    key = "|".join(f"{f.function}@{short_path(f.file)}" for f in stack[start:start + depth])
    return domain[0] + hashlib.sha1(f"{domain}:{key}".encode()).hexdigest()[:15]
