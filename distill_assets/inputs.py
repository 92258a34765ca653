"""Curated inputs: load a task's prompts from any supported file, normalise, dedup, split.

Plain functions, polars in and out; the `curated_inputs` asset is a thin shell around them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from distill_assets.spec import TaskSpec

PROMPT_SCHEMA = {"prompt_id": pl.String, "task": pl.String, "prompt": pl.String, "reference": pl.String}


class InputError(ValueError):
    """An input file that cannot be used; the message names the file and what is wrong."""


def read_table(path: Path) -> pl.DataFrame:
    """Read JSONL, Parquet, CSV or a `datasets` directory (saved with `save_to_disk`)."""
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise InputError(f"{path}: not a `datasets` directory saved with save_to_disk ({err})") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise InputError(f"{path}: DatasetDict without a 'train' split (has {list(ds)})")
            ds = ds["train"]
        return pl.from_arrow(ds.data.table)
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(path, infer_schema_length=None)
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as err:
        raise InputError(f"{path}: could not be read as {suffix[1:]}: {err}") from None
    raise InputError(f"{path}: unsupported input format {suffix!r}; use .jsonl, .parquet, .csv or a datasets directory")


def prompt_id(task: str, prompt: str) -> str:
    """A stable id: the same prompt of the same task has the same id in every run."""
    return hashlib.sha256(f"{task}\x00{prompt}".encode()).hexdigest()[:16]


def normalise(frame: pl.DataFrame, task: TaskSpec, source: Path) -> pl.DataFrame:
    """Map a user's columns onto the prompt schema (prompt_id, task, prompt, reference)."""
    missing = [c for c in (task.prompt_field, task.reference_field, task.id_field) if c and c not in frame.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {missing} for task {task.name!r}; "
            f"columns are {frame.columns} (set prompt_field/reference_field/id_field in the spec)"
        )
    prompts = frame[task.prompt_field].cast(pl.String).str.strip_chars()
    out = pl.DataFrame({"task": [task.name] * frame.height, "prompt": prompts})
    if task.id_field:
        out = out.with_columns(prompt_id=frame[task.id_field].cast(pl.String))
    else:
        out = out.with_columns(
            prompt_id=pl.col("prompt").map_elements(lambda p: prompt_id(task.name, p), return_dtype=pl.String)
        )
    reference = frame[task.reference_field].cast(pl.String) if task.reference_field else None
    out = out.with_columns(reference=reference if reference is not None else pl.lit(None, pl.String))
    empty = out.filter(pl.col("prompt").is_null() | (pl.col("prompt") == ""))
    if empty.height:
        raise InputError(f"{source}: {empty.height} empty prompt(s) in column {task.prompt_field!r}")
    return out.select(list(PROMPT_SCHEMA)).cast(PROMPT_SCHEMA)


def dedup(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop exact duplicate prompts, keeping the first; returns the frame and how many were dropped."""
    kept = frame.unique(subset=["prompt"], keep="first", maintain_order=True)
    return kept, frame.height - kept.height


def split_eval(frame: pl.DataFrame, eval_size: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out `eval_size` prompts chosen by id hash, so the split is stable across runs."""
    if eval_size >= frame.height:
        raise InputError(f"eval_size {eval_size} leaves no training prompts out of {frame.height}")
    ranked = frame.with_columns(_rank=pl.col("prompt_id").hash(seed=0)).sort("_rank")
    held = ranked.head(eval_size).drop("_rank")
    return frame.filter(~pl.col("prompt_id").is_in(held["prompt_id"].implode())), held


def curate(task: TaskSpec, source: Path, eval_source: Path | None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """The task's training prompts and held-out eval prompts, disjoint, with counts for metadata."""
    train, dropped = dedup(normalise(read_table(source), task, source))
    if eval_source is None:
        train, held = split_eval(train, task.eval_size)
    else:
        held, _ = dedup(normalise(read_table(eval_source), task, eval_source))
        held = held.head(task.eval_size)
    overlap = train.filter(pl.col("prompt").is_in(held["prompt"].implode()))
    train = train.filter(~pl.col("prompt").is_in(held["prompt"].implode()))
    if held["reference"].null_count():
        raise InputError(f"{eval_source or source}: eval prompts need a reference answer ({task.reference_field!r})")
    stats = {"duplicates_dropped": dropped, "eval_overlap_dropped": overlap.height}
    return train, held, stats
