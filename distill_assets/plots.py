"""The report's figure: quality against latency, one point per teacher and student, the Pareto front marked."""

from __future__ import annotations

import base64
from pathlib import Path


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats: none is at least as fast and as good, and better in one.

    `points` maps a name to (latency, quality); lower latency and higher quality are better.
    Returned in order of latency.
    """
    front = []
    for name, (latency, quality) in points.items():
        dominated = any(
            (lat <= latency and q >= quality) and (lat < latency or q > quality)
            for other, (lat, q) in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n])


def quality_latency_points(report: dict) -> dict[str, tuple[float, float]]:
    return {
        name: (m["latency_ms_p50"], m["mean_score"])
        for name, m in report["models"].items()
        if m.get("mean_score") is not None and m.get("latency_ms_p50") is not None
    }


def write_quality_latency_plot(report: dict, path: Path) -> Path:
    """A PNG: mean exact match over every task against batch-1 latency, with the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")  # no display; set before pyplot loads
    import matplotlib.pyplot as plt

    points = quality_latency_points(report)
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for role, marker, color in (("teacher", "s", "tab:red"), ("student", "o", "tab:blue")):
        names = [n for n in points if report["models"][n]["role"] == role]
        ax.scatter([points[n][0] for n in names], [points[n][1] for n in names], marker=marker, c=color,
                   s=60, label=f"{role}s", zorder=3)  # fmt: skip
        for n in names:
            ax.annotate(n, points[n], textcoords="offset points", xytext=(5, 5), fontsize=8)
    if front:
        ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "--", c="gray", zorder=2,
                label="Pareto front")  # fmt: skip
        ax.scatter([points[n][0] for n in front], [points[n][1] for n in front], s=160, facecolors="none",
                   edgecolors="black", zorder=4)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(f"latency p50, ms (batch 1, {report['hardware']}; log scale)")
    ax.set_ylabel("mean exact match over all tasks")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Quality against latency")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def embed_url(path: Path) -> str:
    """The PNG as a base64 data URL, for markdown metadata (Dagster has no chart metadata type)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
