"""Partition key strings, without importing Dagster: the plain-function modules use them too."""

from __future__ import annotations


def teacher_task_key(teacher: str, task: str) -> str:
    """The key string of Dagster's MultiPartitionKey({"teacher": ..., "task": ...}): dimensions sorted by name.

    tests/test_training_set.py checks it against Dagster's own rendering.
    """
    return f"{task}|{teacher}"
