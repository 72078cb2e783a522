"""The report's `timeline`: every counter at each round end and at the baseline and drained marks, in time order.

Charts (report.html, growth.png) draw from it. Each point is `{"label", "kind", <counter>: bytes, ...}` where
kind is `warmup`, `screen` or `measured` (a round end), `baseline` (after the drain that follows warmup),
`drained` (after the final drain), or `screen_baseline` / `screen_drained` (the untraced pass of `--screen`).
"""

from __future__ import annotations

from ..capture import COUNTERS

COUNTER_LABELS = {"rss_bytes": "RSS", "uss_bytes": "USS", "maxrss_bytes": "peak RSS", "heap_bytes": "C heap",
                  "gpu_allocated_bytes": "GPU allocated", "gpu_reserved_bytes": "GPU reserved",
                  "gpu_used_bytes": "device used", "pinned_host_bytes": "pinned host"}
MARK_KINDS = {("mark", "baseline"): "baseline", ("mark", "drained"): "drained",
              ("screen_mark", "baseline"): "screen_baseline", ("screen_mark", "drained"): "screen_drained"}
MARK_LABELS = {"baseline": "baseline", "drained": "final drain", "screen_baseline": "screen baseline",
               "screen_drained": "screen drain"}


def build_timeline(events: list[dict]) -> list[dict]:
    """Round ends and marks from a capture's events, with the counters each one read."""
    points = []
    for e in events:
        if e.get("type") == "round":
            kind = e.get("phase", "measured")
            label = f"{'warmup ' if kind == 'warmup' else 'screen ' if kind == 'screen' else ''}{e['index']}"
        else:
            kind = MARK_KINDS.get((e.get("type"), e.get("name")))
            if kind is None:
                continue
            label = MARK_LABELS[kind]
        points.append({"label": label, "kind": kind, **{k: e[k] for k in COUNTERS if e.get(k) is not None}})
    return points


def counters_in(timeline: list[dict]) -> list[str]:
    return [k for k in COUNTERS if any(k in p for p in timeline)]


def reference_point(timeline: list[dict]) -> dict | None:
    """The point growth is measured from: the baseline, else the screening baseline, else the first point."""
    for kind in ("baseline", "screen_baseline"):
        point = next((p for p in timeline if p["kind"] == kind), None)
        if point is not None:
            return point
    return timeline[0] if timeline else None


def growth_series(timeline: list[dict]) -> dict[str, list[float | None]]:
    """Each counter's change since the reference point, in MiB, one value per timeline point."""
    ref = reference_point(timeline) or {}
    out = {}
    for k in counters_in(timeline):
        base = ref.get(k)
        out[k] = [None if p.get(k) is None or base is None else round((p[k] - base) / 2**20, 3) for p in timeline]
    return out
