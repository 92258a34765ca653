"""Teacher routing: which teacher generates each task's training data.

With `routing: fixed` the spec's `teachers[].tasks` decide. With `routing: auto` each
task goes to the candidate teacher with the best mean score on the task's dev split
(teacher_evaluation, stage "dev"); a tie keeps the teacher listed first in the spec.

`Routing` is the one answer to "which teacher for this task, which teacher x task
partitions to generate": built from the spec, or from the `routing_table` asset once
the teachers have been measured. The fixed/auto distinction lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from distill_assets.keys import teacher_task_key
from distill_assets.spec import Spec

ROUTING_TABLE = "routing_table"  # the asset that records the decision

ROUTING_SCHEMA = {
    "task": pl.String,
    "teacher": pl.String,
    "dev_score": pl.Float64,  # null where the teacher was not scored on the task's dev split
    "dev_prompts": pl.Int64,
    "routed": pl.Boolean,
    "mode": pl.String,
}


@dataclass(frozen=True)
class Routing:
    """task -> the teacher that generates its training data."""

    teachers: dict[str, str]
    # True when the routing table decides at run time (`routing: auto`); `teachers` from the spec
    # alone is then provisional: each task's first candidate.
    measured: bool = False

    @classmethod
    def from_spec(cls, spec: Spec) -> Routing:
        """What the spec alone says: the fixed assignment, or under `routing: auto` each task's first candidate."""
        return cls({t.name: spec.candidates(t.name)[0] for t in spec.tasks}, measured=spec.routing_mode == "auto")

    @classmethod
    def from_table(cls, table: pl.DataFrame) -> Routing:
        """The decision a routing_table frame records."""
        routed = table.filter(pl.col("routed"))
        measured = bool(routed.height) and routed["mode"][0] == "auto"
        return cls(dict(routed.select("task", "teacher").iter_rows()), measured=measured)

    @classmethod
    def resolve(cls, spec: Spec, table: pl.DataFrame | None) -> Routing:
        """The routing in force: the spec's when it fixes one, else the routing table's (when there is one yet)."""
        spec_routing = cls.from_spec(spec)
        return cls.from_table(table) if spec_routing.measured and table is not None else spec_routing

    def teacher(self, task: str) -> str:
        return self.teachers[task]

    def partition_keys(self) -> list[str]:
        """The teacher x task partitions whose completions go into the training set."""
        return [teacher_task_key(teacher, task) for task, teacher in sorted(self.teachers.items())]

    def describe(self) -> str:
        return ", ".join(f"{task} -> {teacher}" for task, teacher in sorted(self.teachers.items()))


def decide_routing(spec: Spec, dev_scores: pl.DataFrame) -> pl.DataFrame:
    """One row per candidate (task, teacher) with its dev score, `routed` marking the chosen teacher.

    `dev_scores` has columns teacher, task, score (mean over the dev prompts) and n. Under
    `routing: fixed` every teacher is listed, with the spec's choice routed.
    """
    scores = {(r["teacher"], r["task"]): (r["score"], r["n"]) for r in dev_scores.iter_rows(named=True)}
    spec_routing = Routing.from_spec(spec)
    rows = []
    for task in spec.tasks:
        candidates = spec.candidates(task.name) if spec_routing.measured else [t.name for t in spec.teachers]
        measured = [(scores.get((t, task.name), (None, 0)), t) for t in candidates]
        if spec_routing.measured:
            chosen = candidates[max(range(len(candidates)), key=lambda i: (measured[i][0][0] or -1.0, -i))]
        else:
            chosen = spec_routing.teacher(task.name)
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
