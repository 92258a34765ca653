"""The report's intervals: every metric with one, paired differences with a verdict, agreement, failures, judges."""

import json

import numpy as np
import polars as pl
import pytest
import yaml

from distill_assets.evaluation import PREDICTION_SCHEMA
from distill_assets.report import build_report, headline_summary, to_markdown
from distill_assets.spec import load_spec
from tests.test_report import efficiency

N = 200  # eval prompts per task


def frame(model: str, stage: str, task: str, right: np.ndarray, judged: list | None = None) -> pl.DataFrame:
    """A model's answers on a task: prompt i answered `r{i}` (its reference) where `right[i]`, else `wrong`.

    `judged` adds a judge metric: a score per prompt, None for a failed request."""
    answers = [f"r{i}" if ok else "wrong" for i, ok in enumerate(right)]
    scores = [[{"metric": "exact_match", "score": float(ok), "error": None}] for ok in right]
    for row, value in zip(scores, judged or []):
        row.append({"metric": "judge", "score": value, "error": None if value is not None else "HTTP 500"})
    return pl.DataFrame(
        {
            "model": model, "stage": stage, "task": task, "prompt_id": [f"{task}{i}" for i in range(N)],
            "prompt": [f"q{i}" for i in range(N)], "prediction": answers, "reference": [f"r{i}" for i in range(N)],
            "metric": "exact_match", "score": right.astype(float), "scores": scores,
        },
        schema=PREDICTION_SCHEMA,
    )  # fmt: skip


@pytest.fixture
def report(spec_file):
    data = yaml.safe_load(spec_file.read_text())
    data["students"][1]["base"]["architecture"]["hidden_size"] = 16  # one size: the methods are compared
    reverse = next(t for t in data["tasks"] if t["name"] == "reverse")
    reverse["metrics"] = ["exact_match", {"name": "judge", "teacher": "teacher_b"}]
    spec_file.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_file)
    rng = np.random.default_rng(0)
    all_right, frames = np.ones(N, bool), []
    for task, teacher in (("dates", "teacher_a"), ("units", "teacher_a"), ("reverse", "teacher_b")):
        judged = [None] * 3 + [0.9] * (N - 3) if task == "reverse" else None
        frames.append(frame(teacher, "teacher", task, all_right, judged))
        other = "teacher_b" if teacher == "teacher_a" else "teacher_a"
        frames.append(frame(other, "teacher", task, rng.random(N) < 0.2, judged))
        one_miss = all_right.copy()
        one_miss[0] = False  # student_m: 199 of 200, within the noise of its teacher's 200
        frames += [frame("student_m", "before", task, np.zeros(N, bool), judged),
                   frame("student_m", "after", task, one_miss, judged),
                   frame("student_s", "before", task, np.zeros(N, bool), judged),
                   frame("student_s", "after", task, rng.random(N) < 0.5, judged)]  # fmt: skip
    sizes = {"teacher_a": (1000, 40.0), "teacher_b": (1000, 44.0), "student_m": (250, 16.0), "student_s": (240, 15.0)}
    eff = {name: efficiency(*size) for name, size in sizes.items()}
    return build_report(spec, pl.concat(frames), eff, "test cpu", resamples=1000)


def test_paired_differences_say_which_are_real(report):
    m = report["tasks"]["dates"]["students"]["student_m"]
    assert m["after"] == pytest.approx(0.995) and m["retention"] == pytest.approx(0.995)
    assert m["vs_routed_teacher"]["estimate"] == pytest.approx(-0.005)
    assert m["vs_routed_teacher"]["low"] < 0 <= m["vs_routed_teacher"]["high"]  # one miss in 200: noise
    assert not m["vs_routed_teacher"]["measurable"]
    assert m["retention_interval"][0] < 0.995 <= m["retention_interval"][1] <= 1.0
    s = report["tasks"]["dates"]["students"]["student_s"]
    assert s["vs_routed_teacher"]["measurable"] and s["vs_routed_teacher"]["high"] < -0.4
    comparisons = {(c["a"], c["b"], c["task"]): c for c in report["method_comparisons"]}
    assert set(comparisons) == {("student_m", "student_s", t) for t in ("dates", "reverse", "units", "all tasks")}
    pooled = comparisons[("student_m", "student_s", "all tasks")]
    assert pooled["measurable"] and 0.4 < pooled["estimate"] < 0.6 and pooled["high"] - pooled["low"] < 0.15


def test_agreement_failures_and_every_metric_with_its_interval(report):
    m = report["tasks"]["dates"]["students"]["student_m"]
    assert m["agreement"]["estimate"] == pytest.approx(0.995)  # the answers match the teacher's but on prompt 0
    assert m["failures"] == [
        {"prompt_id": "dates0", "prompt": "q0", "reference": "r0", "prediction": "wrong", "score": 0.0,
         "teacher_prediction": "r0", "teacher_score": 1.0}
    ]  # fmt: skip
    reverse = report["tasks"]["reverse"]
    assert reverse["metrics"] == ["exact_match", "judge"] and reverse["judges"] == {"judge": "teacher_b"}
    judged = next(
        r for r in reverse["scores"] if (r["model"], r["stage"], r["metric"]) == ("teacher_b", "teacher", "judge")
    )
    assert judged["score"] == pytest.approx(0.9) and judged["n"] == N - 3 and judged["failed"] == 3  # fmt: skip
    mean = report["models"]["student_s"]["mean_score_interval"]
    assert mean[0] < report["models"]["student_s"]["mean_score"] < mean[1]
    assert json.loads(json.dumps(report)) == report  # report.json carries it all


def test_the_markdown_shows_intervals_verdicts_judges_and_failures(report):
    md = to_markdown(report, image="q.png", task_image="t.png")
    assert "| dates | **exact_match** | teacher_a | 1.000 [1.000, 1.000] |" in md
    assert "| reverse | judge (judged by teacher_b) | teacher_b | 0.900 [0.900, 0.900] (3 unscored) |" in md
    assert "| dates | student_m | 0.995 [0.985, 1.000] | teacher_a 1.000 [1.000, 1.000] | -0.005 [" in md
    assert "no measurable difference | 0.995 [" in md and "| lower |" in md
    assert "| dates | student_m | `q0` | `r0` | `wrong` | 0.000 | `r0` |" in md
    assert "- student_m (sft) - student_s (sft), all tasks: +0." in md
    assert "![score vs latency per task](t.png)" in md
    summary = headline_summary(report)
    assert "- **student_m** on dates (exact_match): 0.995 [0.985, 1.000], retention 99.5% [" in summary
    assert "of teacher_a: no measurable difference" in summary


def test_the_per_task_plot_has_error_bars(report, tmp_path):
    from distill_assets.plots import task_score_points, write_task_plots

    points = task_score_points(report)
    student_s = next(p for p in points["dates"] if p[0] == "student_s")
    assert student_s[4] < student_s[3] < student_s[5]  # low < score < high: a bar to draw
    assert write_task_plots(report, tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
