"""Bytes per generated token that the pipeline stores: the generation cache (SQLite) and the frame (parquet).

python -m bench.storage_per_token [--completions 2000] [--tokens 256] [--top-k 20]

The completions go through the asset's own path (CachedBackend over the GenerationCache,
then write_completions, which streams the frame to parquet in row groups) from a stand-in
teacher that answers with BPE-like tokens (English words and pieces, 4 to 5 characters a
token) of a 128,256-token vocabulary, with and without its top-k log-probabilities per token
(what offline logit distillation keeps). Side by side, the same completions in the layout
the pipeline had before its compact one: JSON rows in the same SQLite table, and a frame
whose top-k is a list of {token, token_id, logprob} structs per token. The stand-in's ids
and log-probabilities are random, so they compress less than a real teacher's: an upper
bound. docs/scaling.md (through bench/scaling_estimate.py) multiplies these figures by a
run's token count.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from distill_assets.generation import sampling_params, write_completions
from distill_assets.spec import TaskSpec, TeacherSpec
from resources.backends import Completion, TeacherBackend, TopK
from resources.cached_backend import CachedBackend
from resources.generation_cache import SCHEMA, GenerationCache, request_key

TEXT = (
    "the answer is because we first convert each value into the target unit then multiply by ten and "
    "add result date month year reverse letters word total therefore step check final format output"
)
WORDS = TEXT.split()
VOCAB = 128_256  # Llama 3's
LEGACY_ENTRY = pl.Struct({"token": pl.String, "token_id": pl.Int64, "logprob": pl.Float64})


class StandIn(TeacherBackend):
    """Answers every request with `tokens` BPE-like tokens, and their top-k alternatives if asked.

    It also keeps its latest call's top-k in the earlier layout (exact log-probabilities, a token
    string per alternative), as backends returned them then.
    """

    name = "stand_in"

    def __init__(self, tokens: int, seed: int = 0):
        self.tokens, self.rng = tokens, random.Random(seed)
        self.last_legacy: list[list[list[dict]] | None] = []

    def _token(self) -> str:
        word = self.rng.choice(WORDS)
        return (" " + word)[: self.rng.randint(3, 6)]

    def _answer(self, k: int) -> tuple[Completion, list[list[dict]] | None]:
        pieces = [self._token() for _ in range(self.tokens)]
        if not k:
            return Completion("".join(pieces), self.tokens, "length"), None
        steps = [
            [{"token": p if j == 0 else self._token(), "logprob": -0.05 - 1.7 * j * self.rng.random(),
              "token_id": self.rng.randrange(VOCAB)} for j in range(k)]
            for p in pieces
        ]  # fmt: skip
        ids = [[alt["token_id"] for alt in step] for step in steps]
        top = TopK.from_steps([[alt["logprob"] for alt in step] for step in steps], ids=ids)
        return Completion("".join(pieces), self.tokens, "length", top_logprobs=top), steps

    def complete(self, requests, params, progress=None, on_completion=None):
        answers = [self._answer(params.top_logprobs) for _ in requests]
        self.last_legacy = [steps for _, steps in answers]
        for i, (completion, _) in enumerate(answers):
            if on_completion:
                on_completion(i, completion)
        return [completion for completion, _ in answers]


class Legacy:
    """The same completions in the earlier layout: JSON rows in the cache's table, struct lists in the frame."""

    def __init__(self, work: Path, top_k: int):
        self.cache_path, self.frame_path = work / f"legacy_cache_{top_k}.sqlite", work / f"legacy_{top_k}.parquet"
        self.db = sqlite3.connect(self.cache_path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)
        self.writer: pq.ParquetWriter | None = None

    def add(self, chunk: pl.DataFrame, steps: list[list[list[dict]] | None], teacher: str, params) -> None:
        rows = []
        for row, top in zip(chunk.iter_rows(named=True), steps):
            fields = {"text": row["completion"]} | {n: row[n] for n in ("num_tokens", "finish_reason", "error")}
            prompt, sample = row["prompt"], row["sample_index"]
            key = request_key(teacher, [{"role": "user", "content": prompt}], params, sample)
            rows.append((key, teacher, json.dumps(fields | {"top_logprobs": top}, ensure_ascii=False), time.time()))
        self.db.executemany("INSERT INTO completions VALUES (?, ?, ?, ?)", rows)
        frame = chunk.drop("topk_ids", "topk_logprobs", "topk_tokens").with_columns(
            top_logprobs=pl.Series(steps, dtype=pl.List(pl.List(LEGACY_ENTRY)))
        )
        table = frame.to_arrow()
        self.writer = self.writer or pq.ParquetWriter(self.frame_path, table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
        if self.writer:
            self.writer.close()


def measure(completions: int, tokens: int, top_k: int, work: Path) -> dict[str, float]:
    teacher = TeacherSpec(
        name="t", model="stand-in", tasks=["task"],
        generation={"max_new_tokens": tokens, "temperature": 0.0, "top_logprobs": top_k},
    )  # fmt: skip
    task = TaskSpec(name="task", source="-")
    prompts = pl.DataFrame(
        {"task": "task", "prompt_id": [f"p{i}" for i in range(completions)],
         "prompt": [f"Question {i}: convert 12.5 km to m and explain." for i in range(completions)]}
    )  # fmt: skip
    cache_path, parquet = work / f"cache_{top_k}.sqlite", work / f"frame_{top_k}.parquet"
    cache, stand_in, legacy = GenerationCache(cache_path), StandIn(tokens), Legacy(work, top_k)
    backend = CachedBackend(stand_in, cache, "stand-in")
    params = sampling_params(teacher, task)
    write_completions(
        backend, prompts, teacher, task, parquet, chunk_rows=128,
        on_chunk=lambda chunk: legacy.add(chunk, stand_in.last_legacy, "stand-in", params),
    )  # fmt: skip
    cache.close()
    legacy.close()
    total = completions * tokens
    chars = pl.scan_parquet(parquet).select(pl.col("completion").str.len_chars().sum()).collect().item()
    return {
        "chars_per_token": chars / total,
        "cache_before": legacy.cache_path.stat().st_size / total,
        "cache_after": _sqlite_bytes(cache_path) / total,
        "parquet_before": legacy.frame_path.stat().st_size / total,
        "parquet_after": parquet.stat().st_size / total,
    }


def _sqlite_bytes(path: Path) -> int:
    """The database file's size once its write-ahead log is folded in."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="distill-storage-") as tmp:
        rows = {k: measure(args.completions, args.tokens, k, Path(tmp)) for k in (0, args.top_k)}
    print(f"{args.completions} completions x {args.tokens} tokens, bytes per generated token")
    print("| top-k kept | chars/token | cache before (JSON) | cache now | frame before (structs) | frame now |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, r in rows.items():
        print(f"| {k} | {r['chars_per_token']:.2f} | {r['cache_before']:.1f} | {r['cache_after']:.1f} | "
              f"{r['parquet_before']:.1f} | {r['parquet_after']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
