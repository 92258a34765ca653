"""Teacher routing: which teacher generates each task's training data.

With `routing: fixed` the spec's `teachers[].tasks` decide. With `routing: auto` each
task goes to the candidate teacher with the best mean score on the task's dev split
(teacher_evaluation, stage "dev"); a tie keeps the teacher listed first in the spec.
"""

from __future__ import annotations

import polars as pl

from distill_assets.keys import teacher_task_key
from distill_assets.spec import Spec

ROUTING_SCHEMA = {
    "task": pl.String,
    "teacher": pl.String,
    "dev_score": pl.Float64,  # null where the teacher was not scored on the task's dev split
    "dev_prompts": pl.Int64,
    "routed": pl.Boolean,
    "mode": pl.String,
}


def decide_routing(spec: Spec, dev_scores: pl.DataFrame) -> pl.DataFrame:
    """One row per candidate (task, teacher) with its dev score, `routed` marking the chosen teacher.

    `dev_scores` has columns teacher, task, score (mean over the dev prompts) and n.
    """
    scores = {(r["teacher"], r["task"]): (r["score"], r["n"]) for r in dev_scores.iter_rows(named=True)}
    auto = spec.routing_mode == "auto"
    fixed = spec.routing()
    rows = []
    for task in spec.tasks:
        candidates = spec.candidates(task.name) if auto else [t.name for t in spec.teachers]
        measured = [(scores.get((t, task.name), (None, 0)), t) for t in candidates]
        if auto:
            best = max(range(len(candidates)), key=lambda i: (measured[i][0][0] or -1.0, -i))
            chosen = candidates[best]
        else:
            chosen = fixed[task.name]
        for (score, n), teacher in measured:
            rows.append(
                {"task": task.name, "teacher": teacher, "dev_score": score, "dev_prompts": n,
                 "routed": teacher == chosen, "mode": spec.routing_mode}
            )  # fmt: skip
    return pl.DataFrame(rows, schema=ROUTING_SCHEMA)


def dev_scores(predictions: pl.DataFrame) -> pl.DataFrame:
    """Mean dev-split score per (teacher, task) from teacher_evaluation's predictions."""
    dev = predictions.filter(pl.col("stage") == "dev")
    return dev.group_by(pl.col("model").alias("teacher"), "task").agg(score=pl.col("score").mean(), n=pl.len())


def routing_of(table: pl.DataFrame) -> dict[str, str]:
    """task -> routed teacher, from a routing table."""
    return dict(table.filter(pl.col("routed")).select("task", "teacher").iter_rows())


def routed_partition_keys(table: pl.DataFrame) -> list[str]:
    return [teacher_task_key(teacher, task) for task, teacher in sorted(routing_of(table).items())]
