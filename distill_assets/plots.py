"""The report's figures: quality against latency (the Pareto front marked), and per task with error bars."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

MARKER_SIZE = 60  # scatter area, points^2
FRONT_RING_SIZE = 160  # the circle drawn around a point on the Pareto front
# Where a label may sit, in points from its marker: nearest first, then further out with a leader line.
_DIRECTIONS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (0, -1), (0, 1), (1, 0), (-1, 0)]
_RADII = [9, 16, 26, 38, 52, 68, 86, 106, 128, 152, 178]
# Ticks per decade for the decades the latency axis spans: three to ten labelled ticks in every case.
_TICKS = [
    (0.5, (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)),
    (1.2, (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)),
    (3.0, (1.0, 2.0, 5.0)),
    (math.inf, (1.0,)),
]
_LEADER_FROM = 26  # radius from which a leader line joins label and point
_PAD = 2.0  # pixels kept clear around a label


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


def quality_latency_figure(report: dict) -> Figure:
    """Mean headline score over every task against batch-1 latency, the Pareto front circled, every point named."""
    plt = _pyplot()
    points = quality_latency_points(report)
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for role, marker, color in (("teacher", "s", "tab:red"), ("student", "o", "tab:blue")):
        names = [n for n in points if report["models"][n]["role"] == role]
        ax.scatter([points[n][0] for n in names], [points[n][1] for n in names], marker=marker, c=color,
                   s=MARKER_SIZE, label=f"{role}s", zorder=3)  # fmt: skip
    if front:
        ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "--", c="gray", zorder=2,
                label="Pareto front")  # fmt: skip
        ax.scatter([points[n][0] for n in front], [points[n][1] for n in front], s=FRONT_RING_SIZE,
                   facecolors="none", edgecolors="black", zorder=4)  # fmt: skip
    _latency_axis(ax, [lat for lat, _ in points.values()])
    ax.set_xlabel(f"latency p50, ms (batch 1, {report['hardware']}; log scale)")
    ax.set_ylabel("mean headline score over all tasks")
    ax.set_ylim(-0.02, 1.04)
    ax.grid(alpha=0.3)
    legend = ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Quality against latency")
    fig.tight_layout()
    _label_points(fig, ax, points, front, avoid=[legend])
    return fig


def _latency_axis(ax: Axes, latencies: list[float]) -> None:
    """A log axis with enough plainly written ticks to read a value off: 10, 15, 20, 30 rather than 2x10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    low, high = (min(latencies), max(latencies)) if latencies else (1.0, 100.0)
    low, high = low / 1.3, high * 1.3  # room for the labels beside the outermost points
    ax.set_xlim(low, high)
    decades = math.log10(high / low)
    subs = next(subs for span, subs in _TICKS if decades <= span)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=100))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1000 else f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


@dataclass
class _Taken:
    """What a new label must keep clear of, in pixels."""

    area: Bbox  # the plot area: labels stay inside
    fixed: list[Bbox]  # markers, the front's line, the legend
    labels: list[Bbox] = field(default_factory=list)
    leaders: list[Bbox] = field(default_factory=list)  # dots along the leader lines

    def cost(self, box: Bbox, leader: list[Bbox]) -> float:
        """Area a candidate label covers: its text on anything, its leader line on other labels (lines may cross)."""
        covered = sum(_overlap(box, other) for other in (*self.fixed, *self.labels, *self.leaders))
        crossed = sum(_overlap(dot, other) for dot in leader for other in self.labels)
        return covered + crossed + _outside(box, self.area)


def _label_points(fig: Figure, ax: Axes, points: dict[str, tuple[float, float]], front: list[str], avoid: list):
    """Name each point where its label covers no other label, marker, the front's line, or anything in `avoid`.

    Points whose markers touch share one label, their names one per line.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    fixed = [*_obstacles(fig, ax, points, front), *(artist.get_window_extent(renderer) for artist in avoid)]
    taken = _Taken(ax.get_window_extent(renderer), fixed)
    for names, xy in _groups(ax, points, within=math.sqrt(FRONT_RING_SIZE) * fig.dpi / 72):
        box, leader = _place_label(ax, renderer, "\n".join(names), xy, taken)
        taken.labels.append(box)
        taken.leaders += leader


def _groups(ax: Axes, points: dict[str, tuple[float, float]], within: float) -> list[tuple[list[str], tuple]]:
    """Points chained by distances under `within` pixels, in order of latency, each group with its centre."""
    pixel = {name: tuple(ax.transData.transform(xy)) for name, xy in points.items()}
    groups: list[list[str]] = []
    for name in sorted(points, key=lambda n: points[n]):
        near = [g for g in groups if any(math.dist(pixel[name], pixel[other]) < within for other in g)]
        groups = [g for g in groups if g not in near] + [[*(n for g in near for n in g), name]]
    out = []
    for group in sorted(groups, key=lambda g: min(points[n] for n in g)):
        group.sort(key=lambda n: points[n])
        centre = [sum(pixel[n][i] for n in group) / len(group) for i in (0, 1)]
        out.append((group, tuple(ax.transData.inverted().transform(centre))))
    return out


def _place_label(ax: Axes, renderer, text: str, xy: tuple[float, float], taken: _Taken) -> tuple[Bbox, list[Bbox]]:
    """Put the label in the first free spot around its point, nearest first; the boxes of its text and leader line.

    A label set further out gets a leader line; where no spot is free, the one that overlaps least is taken.
    """
    from matplotlib.text import Text

    best = None
    for radius in _RADII:
        for dx, dy in _DIRECTIONS:
            scale = radius / math.hypot(dx, dy)
            label = _annotate(ax, text, xy, (dx * scale, dy * scale), leader=radius >= _LEADER_FROM)
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer).padded(_PAD)  # the text alone, not its leader line
            leader = _leader_dots(ax, xy, box) if radius >= _LEADER_FROM else []
            cost = taken.cost(box, leader)
            if best is not None and cost >= best[0]:
                label.remove()
                continue
            if best is not None:
                best[1].remove()
            best = (cost, label, box, leader)
            if cost == 0:
                return box, leader
    return best[2], best[3]


def _leader_dots(ax: Axes, xy: tuple[float, float], box: Bbox) -> list[Bbox]:
    """The leader line from a point to its label, as dots, leaving out the stretch beside the point's own marker."""
    (x0, y0), (x1, y1) = ax.transData.transform(xy), _nearest_in(box, ax.transData.transform(xy))
    length = math.hypot(x1 - x0, y1 - y0)
    return [_dot(x0 + (x1 - x0) * d / length, y0 + (y1 - y0) * d / length) for d in _steps(12.0, length)]


def _obstacles(fig: Figure, ax: Axes, points: dict[str, tuple[float, float]], front: list[str]) -> list[Bbox]:
    """What a label must not cover, in pixels: every marker (with its ring on the front) and the front's line."""
    pixels = fig.dpi / 72
    boxes = [
        _square(ax.transData.transform(xy), math.sqrt(FRONT_RING_SIZE if name in front else MARKER_SIZE) / 2 * pixels)
        for name, xy in points.items()
    ]
    line = ax.transData.transform([points[n] for n in front]) if front else []
    for (x0, y0), (x1, y1) in pairwise(line):
        length = max(math.hypot(x1 - x0, y1 - y0), 1e-9)
        boxes += [_dot(x0 + (x1 - x0) * d / length, y0 + (y1 - y0) * d / length) for d in _steps(0.0, length)]
    return boxes


def _steps(start: float, stop: float, every: float = 3.0) -> list[float]:
    """Distances from `start` to `stop`, `every` pixels apart: where to put the dots that stand for a line."""
    count = int(max(stop - start, 0.0) / every)
    return [start + every * i for i in range(count + 1)] if stop > start else []


def _dot(x: float, y: float) -> Bbox:
    return _square((x, y), 1.0)


def _nearest_in(box: Bbox, point) -> tuple[float, float]:
    """The point of `box` nearest to `point` (where a leader line meets its label)."""
    return (min(max(point[0], box.x0), box.x1), min(max(point[1], box.y0), box.y1))


def _annotate(ax: Axes, text: str, xy: tuple[float, float], offset: tuple[float, float], leader: bool):
    dx, dy = offset
    return ax.annotate(
        text,
        xy,
        xytext=offset,
        textcoords="offset points",
        fontsize=8,
        ha="left" if dx > 0.5 else "right" if dx < -0.5 else "center",
        va="bottom" if dy > 0.5 else "top" if dy < -0.5 else "center",
        arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.6, "shrinkA": 1, "shrinkB": 4} if leader else None,
        annotation_clip=False,
    )


def _square(center, half: float) -> Bbox:
    from matplotlib.transforms import Bbox

    (x, y) = center
    return Bbox.from_extents(x - half, y - half, x + half, y + half)


def _overlap(a: Bbox, b: Bbox) -> float:
    """The area two boxes share (0 when they only touch)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def _outside(box: Bbox, area: Bbox) -> float:
    """How much of a label lies outside the plot area, weighted so that leaving it is worse than crowding."""
    inside = _overlap(box, area)
    return 10 * (box.width * box.height - inside)


def write_quality_latency_plot(report: dict, path: Path) -> Path:
    """A PNG: mean headline score over every task against batch-1 latency, with the Pareto front."""
    return _save(quality_latency_figure(report), path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; set before pyplot loads
    import matplotlib.pyplot as plt

    return plt


def embed_url(path: Path) -> str:
    """The PNG as a base64 data URL, for markdown metadata (Dagster has no chart metadata type)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def task_score_points(report: dict) -> dict[str, list[tuple[str, str, float, float, float, float]]]:
    """Per task: (model, role, latency, headline score, low, high) of every model measured and scored on it.

    Teachers are scored as teachers, students after distillation."""
    out: dict[str, list] = {}
    for task, entry in report["tasks"].items():
        rows = {(r["model"], r["stage"]): r for r in entry.get("scores", []) if r["metric"] == entry.get("headline")}
        points = []
        for name, model in report["models"].items():
            r = rows.get((name, "teacher" if model["role"] == "teacher" else "after"))
            if r and r.get("score") is not None and model.get("latency_ms_p50") is not None:
                low, high = (r["low"], r["high"]) if r.get("low") is not None else (r["score"], r["score"])
                points.append((name, model["role"], model["latency_ms_p50"], r["score"], low, high))
        out[task] = points
    return out


def task_plots_figure(report: dict) -> Figure:
    """One panel per task: each model's headline score against its latency, the score's 95% interval as a bar,
    every point named where its label covers no other (as on the quality-vs-latency figure)."""
    plt = _pyplot()
    points = task_score_points(report)
    fig, axes = plt.subplots(1, max(len(points), 1), figsize=(4.4 * max(len(points), 1), 4.0), dpi=110, squeeze=False)
    legends = []
    for ax, (task, rows) in zip(axes[0], points.items()):
        for role, marker, color in (("teacher", "s", "tab:red"), ("student", "o", "tab:blue")):
            mine = [r for r in rows if r[1] == role]
            if mine:
                ax.errorbar([r[2] for r in mine], [r[3] for r in mine],
                            yerr=[[r[3] - r[4] for r in mine], [r[5] - r[3] for r in mine]],
                            fmt=marker, color=color, capsize=3, label=f"{role}s", zorder=3)  # fmt: skip
        _latency_axis(ax, [r[2] for r in rows])
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("latency p50, ms (log scale)", fontsize=8)
        ax.set_ylabel(report["tasks"][task].get("headline", "score"), fontsize=8)
        ax.set_ylim(-0.04, 1.06)
        ax.grid(alpha=0.3)
        legends.append(ax.legend(loc="center left", fontsize=7))
    fig.suptitle(f"Headline score against latency per task (95% intervals; {report['hardware']})", fontsize=10)
    fig.tight_layout()
    for ax, legend, rows in zip(axes[0], legends, points.values()):
        _label_points(fig, ax, {name: (latency, score) for name, _, latency, score, _, _ in rows}, [], [legend])
    return fig


def write_task_plots(report: dict, path: Path) -> Path:
    """A PNG with one panel per task: score against latency, with error bars."""
    return _save(task_plots_figure(report), path)
