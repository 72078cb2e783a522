"""growth.png: the per-round counter chart as an image that Markdown viewers (GitHub issues) show."""

from __future__ import annotations

from pathlib import Path

from .timeline import COUNTER_LABELS, MARK_LABELS, growth_series


def write_growth_png(timeline: list[dict], path: Path) -> bool:
    """Each counter's change since the baseline per round, warmup shaded, drains marked; False when no rounds."""
    series = growth_series(timeline)
    if not series:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend switch in the process that calls this
    ax = fig.subplots()
    x = list(range(len(timeline)))
    for key, values in series.items():
        ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", markersize=3,
                label=COUNTER_LABELS[key])
    warmup = [i for i, p in enumerate(timeline) if p["kind"] == "warmup"]
    if warmup:
        ax.axvspan(warmup[0] - 0.5, warmup[-1] + 0.5, color="0.9", label="warmup")
    for i, p in enumerate(timeline):
        if p["kind"] in MARK_LABELS:
            ax.axvline(i, color="#8250df", linestyle="--", linewidth=1)
            ax.annotate(MARK_LABELS[p["kind"]], (i, 1), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize=8, color="#8250df")
    ax.set_xticks(x, [p["label"] for p in timeline], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("MiB since baseline")
    ax.set_title("Growth of every counter per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(path)
    return True
