"""score_predictions: every metric of a task per prompt, in a frame that concatenates across tasks."""

from __future__ import annotations

import polars as pl
import pytest

from distill_assets.curation import JudgeVerdict
from distill_assets.evaluation import agreement, metric_scores, metric_summary, score_predictions, worst_prompts
from distill_assets.spec import EvaluationSpec, TaskSpec
from resources.backends import Completion


class Answers:
    """A backend that answers each prompt from a table."""

    name = "answers"

    def __init__(self, table: dict[str, str]):
        self.table = table

    def generate(self, prompts, params, progress=None) -> list[Completion]:
        return [Completion(self.table[p[-1]["content"]], 1, "stop") for p in prompts]


def eval_set(task: str, rows: list[tuple[str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"prompt_id": [f"{task}{i}" for i in range(len(rows))], "task": task,
         "prompt": [p for p, _ in rows], "reference": [r for _, r in rows]},
        schema={"prompt_id": pl.String, "task": pl.String, "prompt": pl.String, "reference": pl.String},
    )  # fmt: skip


def test_every_metric_per_prompt_across_tasks_with_different_metrics():
    backend = Answers({"2+2?": "4.0", "10*100?": "about 1,000", "word?": "Billing.", "ticket?": "{}"})
    numbers = TaskSpec(name="numbers", source="-", metrics=["numeric", "exact_match"])
    labels = TaskSpec(name="labels", source="-", metrics=["normalized_match", "json_valid"])
    settings = EvaluationSpec()
    frames = pl.concat(
        [
            score_predictions(backend, eval_set("numbers", [("2+2?", "4"), ("10*100?", "1000")]), numbers, settings,
                              "m", "after"),
            score_predictions(backend, eval_set("labels", [("word?", "billing"), ("ticket?", None)]), labels, settings,
                              "m", "after"),
        ]
    )  # fmt: skip
    assert frames["metric"].to_list() == ["numeric", "numeric", "normalized_match", "normalized_match"]
    assert frames["score"].to_list() == [1.0, 1.0, 1.0, None]  # no reference: unscored, not 0
    long = metric_scores(frames).sort("prompt_id", "metric")
    assert long.filter(pl.col("task") == "numbers")["score"].to_list() == [0.0, 1.0, 0.0, 1.0]
    labels_rows = long.filter(pl.col("task") == "labels").sort("prompt_id", "metric")
    assert labels_rows.select("metric", "score", "error").rows() == [
        ("json_valid", 0.0, None), ("normalized_match", 1.0, None),  # "Billing." is not JSON
        ("json_valid", 1.0, None), ("normalized_match", None, None),
    ]  # fmt: skip
    summary = metric_summary(frames).filter(pl.col("task") == "labels")
    assert summary.select("metric", "headline", "score", "n").rows() == [
        ("normalized_match", True, 1.0, 1), ("json_valid", False, 0.5, 2)
    ]  # fmt: skip
    assert worst_prompts(frames, 1)["prompt_id"].to_list() == ["labels1", "numbers0"]  # unscored first


def test_a_judges_failures_are_unscored_with_their_reason_and_agreement_uses_the_teachers_answer():
    def grader(settings, prompts, answers, references):
        assert settings.teacher == "teacher_b" and references == ["Paris", "Rome", "Oslo"]
        return [JudgeVerdict(9.0, "Score: 9"), JudgeVerdict(None, "", "HTTP 500"), JudgeVerdict(None, "fine")]

    task = TaskSpec(name="capitals", source="-", metrics=[{"name": "judge", "teacher": "teacher_b"}, "contains"])
    prompts = eval_set("capitals", [("France?", "Paris"), ("Italy?", "Rome"), ("Norway?", "Oslo")])
    student = Answers({"France?": "It is Paris", "Italy?": "Milan", "Norway?": "oslo"})
    frame = score_predictions(student, prompts, task, EvaluationSpec(), "s", "after", grader=grader)
    judged = metric_scores(frame).filter(pl.col("metric") == "judge")
    assert judged["score"].to_list() == [pytest.approx(0.9), None, None]
    assert judged["error"].to_list() == [None, "HTTP 500", "no score in the judge's reply 'fine'"]
    teacher = score_predictions(Answers({"France?": "Paris", "Italy?": "Rome", "Norway?": "Oslo"}), prompts, task,
                                EvaluationSpec(), "t", "teacher", grader=grader)  # fmt: skip
    # the headline (judge) does not compare two answers: agreement is by normalized_match
    assert agreement(frame, teacher, task)["agreement"].to_list() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="no judge was given"):
        score_predictions(student, prompts, task, EvaluationSpec(), "s", "after")
