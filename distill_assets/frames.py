"""Frames too large to hold at once: read, transform and write them a chunk of rows at a time.

At 100k prompts with top-20 log-probabilities a synthetic-completions frame is gigabytes,
nearly all of it in the top-k columns; its text columns are megabytes. A stage computes its
decisions on the light columns in memory and carries the heavy columns through chunk by chunk:
`chunked` makes a polars lazy frame whose rows a Python loop produces from bounded chunks of
another, so a sink (`write_parquet`) never holds more than a few chunks. polars' own streaming
joins and filters buffer far more than a chunk (measured: 2.4x the memory at 100k rows than at
20k), which is why the loop is ours. Files are written in row groups of `CHUNK_ROWS` rows, so a
reader's memory is bounded too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO

import polars as pl
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

# Rows per chunk and per Parquet row group: 15 MB of top-20 ids and log-probs at 64 tokens. Read when
# used, so that a process may set it (the memory test sets it lower to have many chunks in a small frame).
CHUNK_ROWS = 2_000
# Per generated token, the teacher's top-k alternatives, most likely first: their token ids (null where the
# backend gives none, as an OpenAI-compatible endpoint does), their log-probabilities, and their strings only
# where there are no ids. Null for the whole row when top_logprobs is 0 and for failed requests.
TOPK_SCHEMA = {
    "topk_ids": pl.List(pl.List(pl.Int32)),
    "topk_logprobs": pl.List(pl.List(pl.Float16)),
    "topk_tokens": pl.List(pl.List(pl.String)),
}
TOPK_COLUMNS = tuple(TOPK_SCHEMA)

Frame = pl.DataFrame | pl.LazyFrame


def lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def light(frame: Frame) -> pl.DataFrame:
    """Every column but the top-k ones, in memory: what curation and merging decide on."""
    return lazy(frame).drop(TOPK_COLUMNS, strict=False).collect()


def batches(frame: Frame, rows: int | None = None) -> Iterator[pl.DataFrame]:
    """The frame's rows in order, about `rows` (CHUNK_ROWS) at a time."""
    rows = rows or CHUNK_ROWS
    if isinstance(frame, pl.DataFrame):
        yield from frame.iter_slices(rows)
    else:
        yield from frame.collect_batches(chunk_size=rows)


Source = Callable[[list[str] | None], Iterator[pl.DataFrame]]  # the columns wanted (None: all) -> chunks


def from_chunks(source: Source, schema: pl.Schema | dict) -> pl.LazyFrame:
    """A lazy frame of `schema` whose rows `source` yields chunk by chunk; projections and filters apply per chunk."""

    def read(with_columns, predicate, n_rows, _batch_size):
        wanted = None
        if with_columns is not None:
            wanted = [*with_columns, *(predicate.meta.root_names() if predicate is not None else [])]
        left = n_rows
        for chunk in source(wanted):
            if predicate is not None:
                chunk = chunk.filter(predicate)
            if with_columns is not None:
                chunk = chunk.select(with_columns)
            if left is not None:
                chunk = chunk.head(left)
                left -= chunk.height
            yield chunk
            if left is not None and left <= 0:
                return

    return register_io_source(read, schema=pl.Schema(schema))


def chunked(
    frame: pl.LazyFrame, fn: Callable[[pl.DataFrame, int], pl.DataFrame], schema: pl.Schema | dict, reads=()
) -> pl.LazyFrame:
    """`frame`'s rows through `fn(chunk, index of the chunk's first row)`, lazily, one chunk at a time.

    `schema` is what `fn` returns; `reads` names the columns of `frame` that `fn` needs even when
    a projection does not ask for them (the others are read only when asked for).
    """
    names = frame.collect_schema().names()

    def source(wanted: list[str] | None) -> Iterator[pl.DataFrame]:
        inner = frame
        if wanted is not None:
            keep = set(wanted) | set(reads)
            inner = frame.select([n for n in names if n in keep] or names[:1])  # a chunk needs a column to have rows
        offset = 0
        for chunk in batches(inner):
            yield fn(chunk, offset)
            offset += chunk.height

    return from_chunks(source, schema)


def beside(frame: Frame, columns: pl.DataFrame) -> pl.LazyFrame:
    """`frame` with `columns` (a frame of as many rows, in the same order) added to its right, chunk by chunk."""
    frame = lazy(frame)

    def add(chunk: pl.DataFrame, offset: int) -> pl.DataFrame:
        if offset + chunk.height > columns.height:
            raise ValueError(f"beside: the frame has more rows than the {columns.height} of {columns.columns}")
        return chunk.hstack(columns.slice(offset, chunk.height))

    return chunked(frame, add, {**frame.collect_schema(), **columns.schema})


def rows_where(frame: Frame, keep: pl.Series) -> pl.LazyFrame:
    """The rows of `frame` whose entry in `keep` (a bool per row, in order) is true, chunk by chunk."""
    frame = lazy(frame)
    return chunked(frame, lambda chunk, offset: chunk.filter(keep.slice(offset, chunk.height)), frame.collect_schema())


def write_parquet(frame: Frame, destination: str | IO[bytes]) -> None:
    """Write a frame in row groups of CHUNK_ROWS rows; a lazy one streams (sink), never held whole."""
    if isinstance(frame, pl.DataFrame):
        frame.write_parquet(destination, row_group_size=CHUNK_ROWS)
    else:
        frame.sink_parquet(destination, row_group_size=CHUNK_ROWS)


def scan_parquet_file(open_file: Callable[[], IO[bytes]]) -> pl.LazyFrame:
    """A Parquet file behind a file object (an object store's), read lazily, CHUNK_ROWS rows at a time."""
    with open_file() as f:
        schema = pl.read_parquet_schema(f)

    def source(wanted: list[str] | None) -> Iterator[pl.DataFrame]:
        with open_file() as f:
            reader = pq.ParquetFile(f, pre_buffer=False)  # pre-buffering reads ahead without bound
            columns = None if wanted is None else [n for n in schema if n in set(wanted)] or list(schema)[:1]
            for batch in reader.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
                yield pl.from_arrow(batch).cast({n: schema[n] for n in columns or schema})

    return from_chunks(source, schema)


def parquet_rows(f: IO[bytes] | str) -> int:
    """Rows of a Parquet file, from its footer."""
    return pq.ParquetFile(f).metadata.num_rows
