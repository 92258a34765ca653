"""The quality-vs-latency figure: every point named where a reader can see it, and a latency axis one can read."""

import itertools
import random

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Annotation, Text

from distill_assets.plots import quality_latency_figure, write_quality_latency_plot

# The demo's report (README): latency p50 in ms and the mean exact match over its three tasks.
DEMO = {
    "teacher_a": ("teacher", 41.7, (1.0 + 0.19 + 0.995) / 3),
    "teacher_b": ("teacher", 44.9, (0.005 + 0.995 + 0.035) / 3),
    "student_m": ("student", 13.6, (1.0 + 0.995 + 0.97) / 3),
    "student_s": ("student", 14.9, (0.995 + 1.0 + 0.985) / 3),
    "student_s_logits": ("student", 10.8, (1.0 + 1.0 + 0.99) / 3),
}


def _report(points: dict[str, tuple[str, float, float]], hardware: str = "2-core CPU") -> dict:
    models = {n: {"role": role, "latency_ms_p50": lat, "mean_score": q} for n, (role, lat, q) in points.items()}
    return {"hardware": hardware, "models": models}


def _crowd() -> dict[str, tuple[str, float, float]]:
    """A method sweep: eight students of one size within half a millisecond and 1.5 points of each other."""
    rng = random.Random(0)
    names = ["sft", "sft_lora", "logits_a05_t1", "logits_a05_t2", "logits_a05_t4", "logits_a09_t1", "logits_a09_t4",
             "on_policy_b05"]  # fmt: skip
    crowd = {n: ("student", 10.8 + rng.random() * 0.5, 0.98 + rng.random() * 0.015) for n in names}
    return {**crowd, "teacher_a": DEMO["teacher_a"], "teacher_b": DEMO["teacher_b"]}


WIDE = {  # a GPU run: from a 135M student to a 70B teacher over three decades of latency
    "teacher_70b": ("teacher", 2400.0, 0.91),
    "teacher_8b": ("teacher", 380.0, 0.84),
    "student_3b": ("student", 110.0, 0.86),
    "student_1b": ("student", 45.0, 0.80),
    "student_135m": ("student", 4.2, 0.41),
}


@pytest.fixture
def figure():
    figures = []

    def draw(report: dict):
        fig = quality_latency_figure(report)
        figures.append(fig)
        fig.canvas.draw()
        return fig

    yield draw
    for fig in figures:
        plt.close(fig)


def _labels(fig) -> dict[str, object]:
    """Each point label's text and its box on the canvas (the text alone, without a leader line)."""
    renderer = fig.canvas.get_renderer()
    return {a.get_text(): Text.get_window_extent(a, renderer) for a in fig.axes[0].texts if isinstance(a, Annotation)}


@pytest.mark.parametrize("points", [DEMO, _crowd(), WIDE], ids=["demo", "crowd", "wide"])
def test_every_point_is_named_and_no_labels_overlap(figure, points):
    fig = figure(_report(points))
    labels = _labels(fig)
    named = [name for text in labels for name in text.split("\n")]
    assert sorted(named) == sorted(points)  # every point named exactly once
    for (a, box_a), (b, box_b) in itertools.combinations(labels.items(), 2):
        assert not box_a.overlaps(box_b), (a, b)
    ax = fig.axes[0]
    area = ax.get_window_extent(fig.canvas.get_renderer())
    markers = {n: ax.transData.transform((lat, q)) for n, (_, lat, q) in points.items()}
    for text, box in labels.items():
        assert area.contains(box.x0, box.y0) and area.contains(box.x1, box.y1), text
        assert not any(box.contains(x, y) for x, y in markers.values()), text  # no label covers a point


def test_points_apart_get_a_label_each(figure):
    labels = _labels(figure(_report(DEMO)))
    assert set(labels) == set(DEMO)  # the demo's points are apart: one name per label


@pytest.mark.parametrize(
    ("points", "expected"),
    [(DEMO, {"10", "15", "20", "30", "40", "50"}), (WIDE, {"5", "10", "20", "50", "100", "200", "500", "1,000"})],
    ids=["demo", "wide"],
)
def test_the_latency_axis_has_plain_ticks(figure, points, expected):
    ax = figure(_report(points)).axes[0]
    low, high = ax.get_xlim()
    shown = {t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high and t.get_text()}
    assert expected <= shown, shown


def test_the_plot_is_written(tmp_path):
    png = write_quality_latency_plot(_report(DEMO), tmp_path / "report" / "quality_vs_latency.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
