"""`--rounds auto`: more measured rounds while a group's trend is undecided, up to a cap.

A slope that is not yet significant, or a leak's rate whose bytes are still under `--min-leak`, is settled by
more rounds, not by a longer guess. After the planned rounds the capture so far is analysed inside the traced
process (the tracker keeps recording; its reader takes the file as written up to now), and the rounds are
doubled while any group stays undecided, until the cap.
"""

from __future__ import annotations

from ..capture import MAIN_ROLE

MAX_ROUNDS = 32  # default cap of `--rounds auto`
FIRST_ROUNDS = 8  # measured rounds `--rounds auto` starts with


def undecided_groups(capture_dir, thresholds: dict, rules_file: str | None = None,
                     role: str = MAIN_ROLE) -> list[dict]:
    """The groups of this process that more rounds would decide, analysed with the run's own thresholds and rules;
    each as {id, component, owner, slope_bytes_per_round, p_rising, bytes}, biggest slope first."""
    from ..analysis.analyze import analyze
    from ..analysis.components import load_rules
    from ..analysis.verdicts import Thresholds, undecided
    from ..capture import read_capture

    capture = read_capture(capture_dir)
    th = Thresholds(**thresholds)
    rules = load_rules(rules_file) if rules_file else ()
    own_role = role if capture.several_processes else None
    found = [f for f in analyze(capture, th, rules).findings if f.role == own_role and undecided(f, th)]
    out = []
    for f in found:
        t = f.details["trend"]
        owner = f"{f.owner.function} {f.owner.file}:{f.owner.line}" if f.owner is not None else None
        out.append({"id": f.id, "component": f.component, "owner": owner, "bytes": f.bytes,
                    "slope_bytes_per_round": t["slope_bytes_per_round"], "p_rising": t["p_rising"]})
    return sorted(out, key=lambda g: -g["slope_bytes_per_round"])


def rounds_to_add(done: int, max_rounds: int) -> int:
    """As many rounds as were measured so far (the evidence doubles), never past the cap."""
    return max(0, min(done, max_rounds - done))

