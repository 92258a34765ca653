"""The teachers' top-k log-probabilities of a training set, in an Arrow file that training memory-maps.

`write_topk_store` copies a frame's `topk_ids` and `topk_logprobs` to an Arrow IPC file a chunk
at a time; `TopKStore` maps it and hands one row's steps to the collator as numpy arrays read
from the mapped buffers, so a training set of any size costs the pages its batches touch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from distill_assets.frames import Frame, batches, lazy


class TopKStore:
    """The training rows' teacher top-k, memory-mapped from an Arrow IPC file: row i of the file is frame row i.

    `steps(row)` gives a row's (ids, log-probabilities) as (steps, k) numpy arrays read from the
    mapped buffers; nothing is loaded until a batch asks for its rows.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()  # zero-copy views of the mapped file
        self._ids, self._logprobs = table.column("topk_ids"), table.column("topk_logprobs")
        self._starts = np.cumsum([0, *(len(c) for c in self._ids.chunks)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def num_steps(self, rows: Sequence[int]) -> list[int]:
        """Teacher steps (generated tokens) of each row."""
        return [len(self._row(self._ids, r)) if r >= 0 else 0 for r in rows]

    def _row(self, column: pa.ChunkedArray, row: int) -> pa.ListArray:
        chunk = int(np.searchsorted(self._starts, row, side="right")) - 1
        value = column.chunk(chunk)[row - int(self._starts[chunk])]
        return value.values if value.is_valid else pa.array([], type=column.type.value_type)

    def steps(self, row: int, vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row `row`'s teacher steps: ids (steps, k) int64 with -1 where no entry, log-probs (steps, k) float32.

        With `vocab_size`, entries past it (padded embedding rows) become -1 too: the loss then
        renormalises the teacher over the entries kept.
        """
        ids, offsets = _entries(self._row(self._ids, row))
        logprobs, _ = _entries(self._row(self._logprobs, row))
        widths = np.diff(offsets)
        k, n = int(widths.max(initial=0)), len(widths)
        out_ids, out_logprobs = np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
        step = np.repeat(np.arange(n), widths)
        slot = np.arange(len(ids)) - np.repeat(offsets[:-1], widths)
        out_ids[step, slot], out_logprobs[step, slot] = ids, logprobs
        if vocab_size is not None:
            padded = out_ids >= vocab_size
            out_ids[padded], out_logprobs[padded] = -1, -np.inf
        return out_ids, out_logprobs


def _entries(steps: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """A row's steps as (flat entries, offsets from 0 delimiting each step's entries)."""
    offsets = steps.offsets.to_numpy()  # into the values behind the whole chunk
    values = steps.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False)
    return values, offsets - offsets[0]


def write_topk_store(frame: Frame, path: Path) -> Path:
    """Copy the frame's top-k ids and log-probabilities, a chunk at a time, to an Arrow IPC file for `TopKStore`.

    Every row must have them: a missing one is named by teacher.
    """
    columns = ["teacher", "topk_ids", "topk_logprobs"]
    source = lazy(frame).collect_schema()
    schema = pl.DataFrame(schema={c: source[c] for c in columns[1:]}).to_arrow().schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for chunk in batches(frame, columns=columns):
            missing = chunk.filter(pl.col("topk_ids").is_null() | pl.col("topk_logprobs").is_null())
            if missing.height:
                teachers = sorted(set(missing["teacher"]))
                raise ValueError(f"training set: rows from {teachers} have no top-k log-probabilities (topk_ids)")
            for batch in chunk.drop("teacher").to_arrow().cast(schema).to_batches():
                writer.write_batch(batch)
    return Path(path)
