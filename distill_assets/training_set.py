"""The training set: each task's completions from the teacher the spec routes it to."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from distill_assets.frames import TOPK_COLUMNS, Frame, batches, chunked, concat, lazy, select, where, write_parquet
from distill_assets.generation import chat_with_answer
from distill_assets.keys import teacher_task_key
from distill_assets.routing import Routing
from distill_assets.spec import Spec

MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
LINEAGE = ["task", "prompt_id", "teacher", "teacher_version"]


def merge_routed(completions: dict[str, Frame], spec: Spec, routing: Routing) -> pl.LazyFrame:
    """Keep, per task, only the routed teacher's answered completions; add chat-format messages (lazily).

    `completions` is keyed by teacher x task partition key; `routing` says which teacher each
    task's completions come from (the spec's or the routing table's). Every routed partition must
    be present: training on a silently missing task would be worse than failing. The
    teachers' top-k log-probabilities ride along for offline logit distillation, a chunk at a time.
    """
    frames = []
    for task, teacher in sorted(routing.teachers.items()):
        key = teacher_task_key(teacher, task)
        if key not in completions:
            raise KeyError(f"synthetic_completions partition {key!r} is missing; materialize it first")
        frames.append(lazy(completions[key]))
    merged = concat(frames)
    schema = merged.collect_schema()
    if "error" in schema:  # a request that failed after its retries has no completion to learn from
        merged = where(merged, pl.col("error").is_null())
    topk = [c for c in TOPK_COLUMNS if c in schema]
    merged = select(merged, [*LINEAGE, "prompt", "completion", *topk])
    system = {t.name: t.system_prompt for t in spec.tasks}

    def with_messages(chunk: pl.DataFrame, _offset: int) -> pl.DataFrame:
        chunk = chunk.with_columns(messages=chat_with_answer(system))
        return chunk.select(c for c in out if c in chunk.columns)  # a projection may have left some out

    out = {**{c: schema[c] for c in [*LINEAGE, "prompt", "completion"]}, "messages": MESSAGES}
    out |= {c: schema[c] for c in topk}
    return chunked(merged, with_messages, out, reads=("task", "prompt", "completion"))


def export(frame: Frame, out_dir: Path, logprobs: bool = False) -> dict[str, Path]:
    """Write the training set as chat JSONL and a `datasets` directory, text only, for use elsewhere.

    With `logprobs`, the teachers' top-k log-probabilities go to `training_set_logprobs.parquet`
    beside them: one row per JSONL line (`row` is its index), with the lineage columns and the
    top-k columns as the synthetic completions store them.
    """
    import datasets

    out_dir.mkdir(parents=True, exist_ok=True)
    frame = lazy(frame)
    topk = [c for c in TOPK_COLUMNS if c in frame.collect_schema()]
    text = [c for c in frame.collect_schema().names() if c not in topk]
    jsonl = out_dir / "training_set.jsonl"
    with jsonl.open("wb") as f:
        for chunk in batches(frame, columns=text):
            chunk.write_ndjson(f)
    ds_dir = out_dir / "training_set_dataset"
    datasets.Dataset.from_polars(frame.select(text).collect()).save_to_disk(str(ds_dir))  # text only: megabytes
    paths = {"jsonl": jsonl, "datasets": ds_dir}
    if logprobs:
        if not topk:
            raise ValueError("export: the training set has no top-k log-probabilities (teachers' top_logprobs is 0)")
        paths["logprobs"] = out_dir / "training_set_logprobs.parquet"
        keyed = select(frame, [*LINEAGE, *topk])
        schema = {"row": pl.Int64, **keyed.collect_schema()}
        numbered = chunked(keyed, lambda chunk, first: chunk.select(_row_numbers(chunk, first), pl.all()), schema)
        write_parquet(numbered, str(paths["logprobs"]))
    return paths


def _row_numbers(chunk: pl.DataFrame, first: int) -> pl.Series:
    return pl.Series("row", range(first, first + chunk.height), dtype=pl.Int64)
