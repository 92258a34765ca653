"""Partitions, all read from the spec: task, teacher x task, student."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from distill_assets.keys import teacher_task_key
from distill_assets.spec import Spec

__all__ = ["ROUTED_TAG", "Partitions", "is_routed", "teacher_task_key"]

# An asset tagged so holds one partition per routed teacher x task only (routing.Routing decides which):
# the headless run and the teacher-change sensor materialize just those.
ROUTED_TAG = {"distill/partitions": "routed"}


def is_routed(tags: dict[str, str]) -> bool:
    """Whether an asset with these tags holds the routed teacher x task partitions only."""
    return ROUTED_TAG.items() <= tags.items()


@dataclass(frozen=True)
class Partitions:
    task: dg.StaticPartitionsDefinition
    teacher_task: dg.MultiPartitionsDefinition
    student: dg.StaticPartitionsDefinition
    teacher: dg.StaticPartitionsDefinition | None = None  # teacher_spec's partitions
    # the students of each stage (Spec.students_by_stage): one checkpoint asset per stage
    student_stages: tuple[dg.StaticPartitionsDefinition, ...] = ()

    @classmethod
    def from_spec(cls, spec: Spec) -> Partitions:
        return cls(
            task=dg.StaticPartitionsDefinition([t.name for t in spec.tasks]),
            teacher_task=dg.MultiPartitionsDefinition(
                {
                    "teacher": dg.StaticPartitionsDefinition([t.name for t in spec.teachers]),
                    "task": dg.StaticPartitionsDefinition([t.name for t in spec.tasks]),
                }
            ),
            student=dg.StaticPartitionsDefinition([s.name for s in spec.students]),
            teacher=dg.StaticPartitionsDefinition([t.name for t in spec.teachers]),
            student_stages=tuple(dg.StaticPartitionsDefinition(names) for names in spec.students_by_stage()),
        )
