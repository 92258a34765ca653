"""The training set: each task's completions from the teacher the spec routes it to."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from distill_assets.generation import chat_prompt
from distill_assets.keys import teacher_task_key
from distill_assets.routing import Routing
from distill_assets.spec import Spec


def merge_routed(completions: dict[str, pl.DataFrame], spec: Spec, routing: Routing) -> pl.DataFrame:
    """Keep, per task, only the routed teacher's answered completions; add chat-format messages.

    `completions` is keyed by teacher x task partition key; `routing` says which teacher each
    task's completions come from (the spec's or the routing table's). Every routed partition must
    be present: training on a silently missing task would be worse than failing. The
    teachers' top-k log-probabilities ride along for offline logit distillation.
    """
    frames = []
    for task, teacher in sorted(routing.teachers.items()):
        key = teacher_task_key(teacher, task)
        if key not in completions:
            raise KeyError(f"synthetic_completions partition {key!r} is missing; materialize it first")
        frames.append(completions[key])
    merged = pl.concat(frames, how="vertical_relaxed")
    if "error" in merged.columns:  # a request that failed after its retries has no completion to learn from
        merged = merged.filter(pl.col("error").is_null())
    system = {t.name: t.system_prompt for t in spec.tasks}
    messages = [
        [*chat_prompt(prompt, system[task]), {"role": "assistant", "content": completion}]
        for task, prompt, completion in merged.select("task", "prompt", "completion").iter_rows()
    ]
    logprobs = ["top_logprobs"] if "top_logprobs" in merged.columns else []
    return merged.with_columns(messages=pl.Series(messages)).select(
        "task", "prompt_id", "teacher", "teacher_version", "prompt", "completion", "messages", *logprobs
    )


def export(frame: pl.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Write the training set as chat JSONL and as a `datasets` directory, for use elsewhere."""
    import datasets

    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "training_set.jsonl"
    with jsonl.open("w") as f:
        for row in frame.iter_rows(named=True):
            f.write(json.dumps(row) + "\n")
    ds_dir = out_dir / "training_set_dataset"
    datasets.Dataset.from_polars(frame).save_to_disk(str(ds_dir))
    return {"jsonl": jsonl, "datasets": ds_dir}
