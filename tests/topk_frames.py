"""Synthetic-completions frames with the compact top-k columns, built directly for the downstream stages' tests."""

from __future__ import annotations

import numpy as np
import polars as pl

TOPK_IDS = pl.List(pl.List(pl.Int32))
TOPK_LOGPROBS = pl.List(pl.List(pl.Float16))
TOPK_TOKENS = pl.List(pl.List(pl.String))


def topk_columns(rows: int, tokens: int, k: int, seed: int = 0, first_ids: list[list[int]] | None = None) -> dict:
    """topk_ids / topk_logprobs for `rows` completions of `tokens` steps of k entries, most likely first.

    Row r's step t holds ids derived from (r, t), so a test can tell rows and steps apart;
    `first_ids[r]` replaces row r's top-1 ids (the tokens a greedy teacher wrote).
    """
    rng = np.random.default_rng(seed)
    r, t, j = np.meshgrid(np.arange(rows), np.arange(tokens), np.arange(k), indexing="ij")
    ids = ((r * 7919 + t * 104729 + j * 31) % 50_000).astype(np.int32)
    if first_ids is not None:
        ids[:, :, 0] = np.asarray(first_ids, dtype=np.int32)
    logprobs = np.sort(-rng.random((rows, tokens, k)) * 5, axis=-1)[:, :, ::-1].astype(np.float16)
    return {
        "topk_ids": pl.Series(ids.reshape(-1)).reshape((rows, tokens, k)).cast(TOPK_IDS),
        "topk_logprobs": pl.Series(logprobs.reshape(-1)).reshape((rows, tokens, k)).cast(TOPK_LOGPROBS),
    }


def topk_frame(rows: int, tokens: int = 4, k: int = 3, teacher: str = "t", task: str = "dates", seed: int = 0):
    """A synthetic_completions partition: distinct prompts and completions, top-k ids and log-probabilities."""
    frame = pl.DataFrame(
        {
            "task": task,
            "prompt_id": [f"{task}-{i}" for i in range(rows)],
            "prompt": [f"{task} question number {i} about {i * 37 % 101}" for i in range(rows)],
            "sample_index": 0,
            "completion": [f"answer {i} is {i * 13 % 97} then {i * 7 % 89}" for i in range(rows)],
            "num_tokens": tokens,
            "finish_reason": "stop",
            "error": pl.Series([None] * rows, dtype=pl.String),
            "teacher": teacher,
            "teacher_version": f"v-{teacher}",
        },
        schema_overrides={"sample_index": pl.Int64, "num_tokens": pl.Int64},
    )
    return frame.with_columns(**topk_columns(rows, tokens, k, seed), topk_tokens=pl.lit(None, TOPK_TOKENS))
