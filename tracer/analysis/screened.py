"""What the untraced screening pass of `--screen` decided, as report notes and as the report's `screen` object."""

from __future__ import annotations

from ..capture import Capture

PYMALLOC = ("the traced pass also recorded Python's own allocator (pymalloc) one allocation at a time (memray "
            "trace_python_allocators), to see small Python objects such as a list of ints")


def describe_screen(result: dict) -> str:
    """One note: the decision, each counter's growth past the drain and, for a server, each process's verdict."""
    processes = result.get("processes") or {}
    if not processes:
        return (("Screening pass (untraced): growth seen, so the rounds were traced. " if result["suspect"] else
                 "Screening pass (untraced): nothing grows, so no traced pass ran. ") + "; ".join(result["reasons"])
                + (". The C heap kept growth past the drain, so " + PYMALLOC if result.get("python_allocators")
                   else ""))
    traced = [role for role, r in processes.items() if r["suspect"]]
    head = ("Screening pass (untraced), each process on its own counters: "
            + (f"growth seen in {', '.join(traced)}, so only {'it was' if len(traced) == 1 else 'they were'} traced"
               if traced else "nothing grows in any process, so no traced pass ran"))
    parts = [f"{role} ({'traced' if r['suspect'] else 'not traced'}): {'; '.join(r['reasons']) or 'no counters'}"
             + (f"; its C heap kept growth, so {PYMALLOC}" if r.get("python_allocators") else "")
             for role, r in processes.items()]
    return head + ". " + ". ".join(parts)


def screen_outcome(capture: Capture) -> dict | None:
    """The report's `screen`: the last screening decision (suspect, suspects, reasons, python_allocators and, for a
    server, `processes`: role -> its own suspect, suspects, reasons, python_allocators); None without `--screen`."""
    results = capture.of_type("screen")
    if not results:
        return None
    last = results[-1]
    return {k: last[k] for k in ("suspect", "suspects", "reasons", "python_allocators", "processes") if k in last}
