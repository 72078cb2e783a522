"""Why vLLM did not start, said plainly: the exception's own message and where it was raised.

vLLM's start runs config validation, model loading and a profiling run; an error in any of them surfaces from
`vllm.LLM(...)`. Only an error raised while vLLM turns the arguments into its config is the user's arguments
being rejected; anything else (an import that fails, a processor that refuses the profiling input, a kernel
that does not support the CPU) is a failed start, reported with its innermost frames. The whole traceback
goes to `capture/engine.log` (the traced process prints it there).
"""

from __future__ import annotations

import traceback

# Frames of vLLM's argument handling: an error raised under them is a rejection of the arguments.
ARGUMENT_FILES = ("vllm/engine/arg_utils.py",)
INNERMOST_FRAMES = 3


def root_cause(exc: BaseException) -> BaseException:
    """The first exception of a chain (`raise ... from`, or raised while handling another)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def rejected_arguments(exc: BaseException) -> bool:
    """True when vLLM raised it while building its config from the engine arguments."""
    if not isinstance(exc, (TypeError, ValueError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return any(f.filename.replace("\\", "/").endswith(ARGUMENT_FILES) for f in frames)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def innermost_frames(exc: BaseException, depth: int = INNERMOST_FRAMES) -> list[str]:
    """`file:line in function` for the `depth` frames nearest to where `exc` was raised, innermost first."""
    frames = traceback.extract_tb(exc.__traceback__)[-depth:]
    return [f"{_site_path(f.filename)}:{f.lineno} in {f.name}" for f in reversed(frames)]


def _site_path(filename: str) -> str:
    """The path from the package down (`vllm/v1/...`), without the install prefix."""
    marker = "site-packages/"
    path = filename.replace("\\", "/")
    return path.split(marker, 1)[1] if marker in path else path


class EngineStartError(RuntimeError):
    """vLLM did not start for a reason other than its arguments; `lines` say what and where."""

    def __init__(self, exc: BaseException):
        root = root_cause(exc)
        self.summary = f"vLLM failed to start: {one_line(root)}"
        self.lines = [self.summary] + [f"  at {frame}" for frame in innermost_frames(root)]
        if root is not exc:
            self.lines.append(f"  (raised as {one_line(exc)})")
        super().__init__(self.summary)
