"""The report's note on measured rounds that `--rounds auto` added, and why."""

from __future__ import annotations

MAX_LISTED = 5  # undecided groups named per check


def describe_added(event: dict) -> str:
    """The report's note on why rounds were added (from a `rounds_added` event)."""
    checks = event["checks"]
    if not any(c["added"] for c in checks):
        first = checks[0]["after"] if checks else event["planned"]
        return (f"--rounds auto: after {first} measured rounds no group's trend was undecided, so no rounds were "
                f"added (cap {event['max_rounds']}).")
    parts = []
    for check in checks:
        groups = check["undecided"]
        named = ", ".join(f"{g['component']} ({g['owner'] or g['id']}: {g['slope_bytes_per_round'] / 1024:.1f} "
                          f"KiB/round, p={g['p_rising']:.3g}, {g['bytes']} bytes)" for g in groups[:MAX_LISTED])
        more = f" and {len(groups) - MAX_LISTED} more" if len(groups) > MAX_LISTED else ""
        if check["added"]:
            parts.append(f"after {check['after']} rounds {len(groups)} group(s) had an undecided trend "
                         f"({named}{more}), so {check['added']} round(s) were added")
        elif groups:
            parts.append(f"after {check['after']} rounds {len(groups)} group(s) were still undecided ({named}{more}), "
                         f"but the cap of {event['max_rounds']} rounds was reached")
        else:
            parts.append(f"after {check['after']} rounds every trend was decided")
    return f"--rounds auto added {event['added']} measured round(s): " + "; ".join(parts) + "."
