"""Synthetic completions: a teacher's answers to a task's curated prompts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from distill_assets.frames import PARQUET_WRITER, TOPK_SCHEMA
from distill_assets.spec import Spec, TaskSpec, TeacherSpec
from resources.backends import Messages, Progress, Prompt, Request, SamplingParams, TeacherBackend, TopK

CHUNK_ROWS = 4096  # completions per backend call and per Parquet row group: what generation holds in memory

COMPLETION_SCHEMA = {
    "task": pl.String,
    "prompt_id": pl.String,
    "prompt": pl.String,
    "sample_index": pl.Int64,
    "completion": pl.String,
    "num_tokens": pl.Int64,
    "finish_reason": pl.String,
    "error": pl.String,  # null when the teacher answered; the reason when it failed after its retries
    **TOPK_SCHEMA,  # per generated token, the teacher's top-k (generation.top_logprobs > 0)
    "teacher": pl.String,
    "teacher_version": pl.String,
}


def chat_prompt(prompt: str, system_prompt: str | None) -> Messages:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": prompt}]


def chat_with_answer(system_prompts: dict[str, str | None]) -> pl.Expr:
    """Per row, `chat_prompt(prompt, the task's system prompt)` and the completion as the assistant's turn.

    A polars expression over the `task`, `prompt` and `completion` columns: a frame's chats built
    from Python dicts would cost kilobytes a row in the conversion (0.5 GB held after 100k rows).
    """
    systems = {task: text or None for task, text in system_prompts.items()}

    def turn(role: str, content: pl.Expr) -> pl.Expr:
        return pl.struct(role=pl.lit(role, pl.String), content=content)

    system = pl.col("task").replace_strict(systems, default=None, return_dtype=pl.String)
    turns = pl.concat_list(
        turn("system", system), turn("user", pl.col("prompt")), turn("assistant", pl.col("completion"))
    )
    field = pl.element().struct.field
    return turns.list.eval(pl.element().filter((field("role") != "system") | field("content").is_not_null()))


def has_chat_template(model_dir: Path) -> bool:
    """Whether a checkpoint directory's tokenizer carries a chat template (read from its files, nothing loaded)."""
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    config = model_dir / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def prompt_mode(teacher: TeacherSpec, spec: Spec) -> Literal["chat", "completion"]:
    """How the teacher is prompted: its spec's `mode`, else completion for a local model without a chat template."""
    if teacher.mode is not None:
        return teacher.mode
    if teacher.backend != "openai":
        path = Path(spec.model_path(teacher.model))
        if path.is_dir() and not has_chat_template(path):
            return "completion"
    return "chat"


def teacher_prompt(teacher: TeacherSpec, task: TaskSpec, prompt: str, mode: str) -> Prompt:
    """A task prompt as the teacher is asked it: its prompt_template applied, as chat messages or raw text."""
    text = teacher.render(prompt, task.name)
    if mode == "completion":
        return f"{task.system_prompt}\n\n{text}" if task.system_prompt else text
    return chat_prompt(text, task.system_prompt)


def sampling_params(teacher: TeacherSpec, task: TaskSpec | None = None) -> SamplingParams:
    """The teacher's sampling settings; a task's `samples` overrides n (rejection sampling)."""
    g = teacher.generation
    return SamplingParams(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        seed=g.seed,
        n=task.samples if task is not None and task.samples is not None else g.n,
        top_logprobs=g.top_logprobs,
        stop=tuple(g.stop),
    )


def checkpoint_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a local checkpoint's files: a retrained model changes it."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def teacher_identity(teacher: TeacherSpec, spec: Spec | None = None) -> str:
    """The generation cache's name for what generates: the spec's identity, plus the checkpoint's files if local."""
    identity = teacher.identity()
    if spec is not None and teacher.backend != "openai":
        path = Path(spec.model_path(teacher.model))
        if path.is_dir():
            identity += f"|files:{checkpoint_fingerprint(path)}"
    return identity


def _nested(rows: Sequence[TopK | None], values: Callable[[list[TopK]], pa.Array]) -> pl.Series:
    """A list<list<...>> column: per row, per generated token, its present alternatives; null where rows has None."""
    kept = [top for top in rows if top is not None]
    per_step = np.concatenate([top.present.sum(axis=1) for top in kept]) if kept else np.zeros(0, np.int64)
    step_offsets = np.concatenate([[0], np.cumsum(per_step)]).astype(np.int64)
    row_offsets = np.concatenate([[0], np.cumsum([len(top) if top is not None else 0 for top in rows])])
    steps = pa.LargeListArray.from_arrays(pa.array(step_offsets), values(kept))
    mask = pa.array([top is None for top in rows], pa.bool_())
    return pl.Series(pa.LargeListArray.from_arrays(pa.array(row_offsets.astype(np.int64)), steps, mask=mask))


def _flat(kept: list[TopK], field: str, dtype: np.dtype) -> pa.Array:
    arrays = [getattr(top, field)[top.present] for top in kept]
    return pa.array(np.concatenate(arrays) if arrays else np.zeros(0, dtype))


def topk_columns(tops: Sequence[TopK | None]) -> dict[str, pl.Series]:
    """The frame's topk_ids, topk_logprobs and topk_tokens for completions' `top_logprobs`, from their arrays."""
    with_ids = [top if top is not None and top.has_ids else None for top in tops]
    with_tokens = [top if top is not None and not top.has_ids else None for top in tops]
    columns = {
        "topk_ids": _nested(with_ids, lambda kept: _flat(kept, "ids", np.int32)),
        "topk_logprobs": _nested(tops, lambda kept: _flat(kept, "logprobs", np.float16)),
        "topk_tokens": _nested(
            with_tokens,
            lambda kept: pa.array([s for top in kept for step in top.tokens for s in step], pa.large_string()),
        ),
    }
    return {name: column.cast(COMPLETION_SCHEMA[name]).alias(name) for name, column in columns.items()}


def completion_chunks(
    backend: TeacherBackend,
    prompts: pl.DataFrame,
    teacher: TeacherSpec,
    task: TaskSpec,
    mode: str = "chat",
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> Iterator[pl.DataFrame]:
    """The completions frame in order, `chunk_rows` rows at a time: one backend call per chunk, so memory
    holds one chunk's completions, never the partition's. n rows per prompt, failed requests kept with
    their reason; `mode` is the teacher's `prompt_mode`: chat messages, or its prompt_template as raw text.
    """
    params = sampling_params(teacher, task)
    total = prompts.height * params.n
    for start in range(0, total, chunk_rows):
        index = [r // params.n for r in range(start, min(start + chunk_rows, total))]
        samples = [r % params.n for r in range(start, start + len(index))]
        chunk = prompts.select("task", "prompt_id", "prompt")[index]
        requests = [Request(teacher_prompt(teacher, task, p, mode), s) for p, s in zip(chunk["prompt"], samples)]
        done = (lambda d, _t, start=start: progress(start + d, total)) if progress else None
        completions = backend.complete(requests, params, done)
        yield pl.DataFrame(
            {
                **chunk.to_dict(),
                "sample_index": samples,
                "completion": [c.text for c in completions],
                "num_tokens": [c.num_tokens for c in completions],
                "finish_reason": [c.finish_reason for c in completions],
                "error": [c.error for c in completions],
                **topk_columns([c.top_logprobs for c in completions]),
                "teacher": teacher.name,
                "teacher_version": teacher.version(),
            },
            schema=COMPLETION_SCHEMA,
        )


def generate_completions(
    backend: TeacherBackend,
    prompts: pl.DataFrame,
    teacher: TeacherSpec,
    task: TaskSpec,
    progress: Progress | None = None,
    mode: str = "chat",
) -> pl.DataFrame:
    """All the completions as one frame, from one backend call: for small partitions (`write_completions`
    streams large ones to a file)."""
    rows = max(prompts.height * sampling_params(teacher, task).n, 1)
    chunks = list(completion_chunks(backend, prompts, teacher, task, mode, rows, progress))
    return pl.concat(chunks) if chunks else pl.DataFrame(schema=COMPLETION_SCHEMA)


def summed(chunks: Sequence[dict[str, float]]) -> dict[str, float]:
    """Counts kept per chunk (a cached backend's, one call per chunk) added up key by key."""
    return {key: sum(chunk[key] for chunk in chunks) for key in chunks[0]} if chunks else {}


def write_completions(
    backend: TeacherBackend,
    prompts: pl.DataFrame,
    teacher: TeacherSpec,
    task: TaskSpec,
    path: Path,
    mode: str = "chat",
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[pl.DataFrame], None] | None = None,
) -> Path:
    """The completions streamed to a Parquet file, one row group per chunk of `chunk_rows`; returns its path.

    The file appears at `path` only once it is whole. `on_chunk` sees each chunk after it is written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    schema = pl.DataFrame(schema=COMPLETION_SCHEMA).to_arrow().schema
    with pq.ParquetWriter(partial, schema, **PARQUET_WRITER) as writer:
        for chunk in completion_chunks(backend, prompts, teacher, task, mode, chunk_rows):
            writer.write_table(chunk.to_arrow(), row_group_size=max(chunk.height, 1))
            if on_chunk:
                on_chunk(chunk)
    partial.replace(path)
    return path
