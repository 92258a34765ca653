"""Curation, merge and dedup of frames with top-k columns: decided on the light columns, carried chunk by chunk."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from distill_assets.curation import curate_completions, curate_partition, dedup_across, kept
from distill_assets.frames import CHUNK_ROWS, TOPK_COLUMNS
from distill_assets.keys import teacher_task_key
from distill_assets.routing import Routing
from distill_assets.spec import QualitySpec, load_spec
from distill_assets.training_set import merge_routed
from tests.topk_frames import topk_frame

PROJECT_DIR = Path(__file__).resolve().parent.parent
ROWS = CHUNK_ROWS + 700


def troubled(rows: int = ROWS, teacher: str = "t", task: str = "dates") -> pl.DataFrame:
    """A partition in which curation drops rows here and there: empty, refused, truncated, repeated."""
    frame = topk_frame(rows, teacher=teacher, task=task)
    i = pl.int_range(pl.len())
    return frame.with_columns(
        completion=pl.when(i % 11 == 0)
        .then(pl.lit(""))
        .when(i % 13 == 0)
        .then(pl.lit("I'm sorry, I cannot help with that."))
        .when(i % 17 == 0)
        .then(pl.lit("answer 1 is 13 then 7"))
        .otherwise(pl.col("completion")),
        prompt=pl.when(i % 17 == 0).then(pl.lit("dates question number 1 about 37")).otherwise(pl.col("prompt")),
        finish_reason=pl.when(i % 19 == 0).then(pl.lit("length")).otherwise(pl.col("finish_reason")),
    )


def test_curation_keeps_each_rows_top_k_beside_it():
    frame = troubled()
    references = pl.DataFrame({"prompt_id": frame["prompt_id"].reverse(), "reference": frame["prompt"].reverse()})
    curated, decided = curate_partition(frame.lazy(), references, QualitySpec())
    assert isinstance(curated, pl.LazyFrame)
    out = curated.collect()
    eager = curate_completions(frame.join(references, on="prompt_id", how="left", maintain_order="left"), QualitySpec())
    assert out.equals(eager)  # the same frame as curating it whole in memory
    assert decided.equals(out.drop(TOPK_COLUMNS))
    assert out["reference"].to_list() == frame["prompt"].to_list()  # joined by id, in the partition's order
    assert set(out["dropped_by"].drop_nulls()) == {"empty", "refusal", "exact_duplicate", "truncated"}
    kept_rows = kept(curated).collect()
    assert 0 < kept_rows.height < ROWS and kept_rows.height == out["dropped_by"].null_count()
    original = dict(zip(frame["prompt_id"], frame["topk_ids"].to_list()))
    assert all(original[p] == ids for p, ids in zip(kept_rows["prompt_id"], kept_rows["topk_ids"].to_list()))


def test_a_reference_per_prompt_id_or_a_clear_error():
    frame = topk_frame(4)
    twice = pl.DataFrame({"prompt_id": ["dates-1", "dates-1"], "reference": ["a", "b"]})
    with pytest.raises(ValueError, match="several references"):
        curate_partition(frame, twice, QualitySpec())


def test_merge_and_dedup_across_keep_top_k_aligned(spec_file):
    spec = load_spec(spec_file)
    routing = Routing.from_spec(spec)
    partitions = {}
    for n, key in enumerate(routing.partition_keys()):
        task, teacher = key.split("|")
        frame = troubled(teacher=teacher, task=task) if n == 0 else topk_frame(30, teacher=teacher, task=task, seed=n)
        if n == 1:  # its row 3 repeats the first partition's row 5 (kept there), with other top-k
            row3 = pl.int_range(pl.len()) == 3
            frame = frame.with_columns(
                prompt=pl.when(row3).then(pl.lit("dates question number 5 about 84")).otherwise("prompt"),
                completion=pl.when(row3).then(pl.lit("answer 5 is 65 then 35")).otherwise("completion"),
            )
        partitions[teacher_task_key(teacher, task)] = curate_partition(frame.lazy(), None, QualitySpec())[0]
    merged = merge_routed({k: kept(f) for k, f in partitions.items()}, spec, routing)
    frame, dropped = dedup_across(merged, spec.quality)
    assert isinstance(frame, pl.LazyFrame)
    assert dropped["dropped_by"].to_list() == ["exact_duplicate_across"]
    out = frame.collect()
    assert out.columns[:7] == ["task", "prompt_id", "teacher", "teacher_version", "prompt", "completion", "messages"]
    assert out.height == sum(kept(f).collect().height for f in partitions.values()) - 1
    for key, curated in partitions.items():
        source = kept(curated).collect()
        task, teacher = key.split("|")
        mine = out.filter((pl.col("task") == task) & ~pl.col("prompt_id").is_in(dropped["prompt_id"].implode()))
        expected = source.filter(~pl.col("prompt_id").is_in(dropped["prompt_id"].implode()))
        assert mine.select("prompt_id", "topk_ids", "topk_logprobs").equals(
            expected.select("prompt_id", "topk_ids", "topk_logprobs")
        ), key
        assert mine["messages"].list.last().struct.field("content").to_list() == mine["completion"].to_list()


MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    import polars as pl
    from distill_assets import frames
    from distill_assets.curation import curate_partition, kept
    from distill_assets.spec import QualitySpec
    from tests.topk_frames import topk_columns, topk_frame

    mode, rows, k, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    frames.CHUNK_ROWS = 500  # many chunks in a frame small enough for a test

    def chunk(first, n):  # rows first .. first + n: distinct texts, 64 tokens of top-k
        ids = pl.Series([f"p{first + i}" for i in range(n)])
        text = topk_frame(n).drop(frames.TOPK_COLUMNS)
        text = text.with_columns(prompt_id=ids, prompt="question " + ids, completion="answer to " + ids)
        return text.with_columns(**topk_columns(n, 64, k, seed=first))

    def write(name, rows):
        step = frames.CHUNK_ROWS
        chunks = lambda _wanted: (chunk(f, min(step, rows - f)) for f in range(0, rows, step))
        frames.write_parquet(frames.from_chunks(chunks, chunk(0, 1).schema), f"{work}/{name}.parquet")

    def curate(name):
        curated, _ = curate_partition(pl.scan_parquet(f"{work}/{name}.parquet"), None, QualitySpec())
        frames.write_parquet(kept(curated), f"{work}/{name}-curated.parquet")
        return pl.scan_parquet(f"{work}/{name}-curated.parquet").select(pl.len()).collect().item()

    if mode == "write":  # in a process of its own: its peak is not the curation's
        write(f"small{k}", 4 * frames.CHUNK_ROWS)
        write(f"big{k}", rows)
    else:
        curate(f"small{k}")  # warm-up: imports, thread pools and allocator arenas count in the baseline
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kept_rows = curate(f"big{k}")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        size = chunk(0, frames.CHUNK_ROWS).estimated_size() * rows / frames.CHUNK_ROWS
        print(json.dumps({"frame_mb": size / 2**20, "growth_mb": (after - before) / 1024, "kept": kept_rows}))
    """
)


def measure(mode: str, rows: int, k: int, work: Path) -> dict | None:
    env = {"PYTHONPATH": str(PROJECT_DIR), "PATH": "/usr/bin:/bin", "HOME": str(work)}
    args = [sys.executable, "-c", MEASURE, mode, str(rows), str(k), str(work)]
    out = subprocess.run(args, cwd=PROJECT_DIR, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1]) if mode == "curate" else None


def test_curating_a_frame_larger_than_a_chunk_holds_about_a_chunk(tmp_path):
    """Curating 48 chunks of rows with top-20 log-probabilities costs little more memory than with top-1.

    Peak RSS growth is measured in fresh processes; the light columns' share (texts, MinHash
    signatures) is the same in both, so the difference is what carrying the top-k columns costs.
    Held whole, it would be more than the frame's size; a few chunks' worth is what it may be.
    """
    rows = 48 * 500
    for k in (1, 20):
        measure("write", rows, k, tmp_path)
    light, heavy = measure("curate", rows, 1, tmp_path), measure("curate", rows, 20, tmp_path)
    assert light["kept"] == heavy["kept"] == rows
    topk_mb = heavy["frame_mb"] - light["frame_mb"]
    assert topk_mb > 150
    assert heavy["growth_mb"] - light["growth_mb"] < 0.3 * topk_mb, (light, heavy)
