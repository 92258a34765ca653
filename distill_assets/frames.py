"""Frames too large to hold at once: read, transform and write them a chunk of rows at a time.

At 100k prompts with top-20 log-probabilities a synthetic-completions frame is gigabytes,
nearly all of it in the top-k columns; its text columns are megabytes. A stage computes its
decisions on the light columns in memory and carries the heavy columns through chunk by chunk.

The chunk loops are ours, in Python, and they run outside polars' engine. `from_chunks` makes a
lazy frame whose rows a Python generator yields; `chunked`, `where`, `select` and `concat` build
on such frames by composing their generators; `scan_parquet` reads a file with pyarrow in such a
loop; `batches` and `write_parquet` drive the composed generator directly. So a stage holds a
chunk or two of each step at a time, however many rows the frame has. polars' streaming engine,
given a frame whose rows a Python loop makes, pulls that loop ahead of its sink and buffers the
chunks, and its own Parquet scan reads ahead of a slower consumer (bench/README.md, "A real run's
size"). The lazy frames are still polars' own: any polars operation works on them, and that
operation is then polars' to stream. Files are written in row groups of `CHUNK_ROWS` rows, so a
reader's memory is bounded too.
"""

from __future__ import annotations

import io
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
# How pyarrow writes a frame's Parquet: zstd at polars' level (pyarrow's own is 1), which with pyarrow's dictionary
# pages takes top-20 frames to 43 bytes per generated token where polars' writer gave 51.
PARQUET_WRITER = {"compression": "zstd", "compression_level": 3}

Frame = pl.DataFrame | pl.LazyFrame
Source = Callable[[list[str] | None], Iterator[pl.DataFrame]]  # the columns wanted (None: all) -> chunks


def lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def light(frame: Frame) -> pl.DataFrame:
    """Every column but the top-k ones, in memory: what curation and merging decide on."""
    return lazy(frame).drop(TOPK_COLUMNS, strict=False).collect()


# The lazy frames made here (by id), each with the generator that reads it: `batches` and `write_parquet` run
# that instead of polars' engine. An entry goes with its frame (LazyFrame is not hashable: no weak-key dict).
_LOOPS: dict[int, Source] = {}


def _loop(frame: Frame) -> Source | None:
    return None if isinstance(frame, pl.DataFrame) else _LOOPS.get(id(frame))


def batches(frame: Frame, rows: int | None = None, columns: Sequence[str] | None = None) -> Iterator[pl.DataFrame]:
    """The frame's rows in order, a chunk at a time (only `columns` when given).

    `rows` (CHUNK_ROWS by default) sizes the chunks of a DataFrame and of a frame polars reads; a
    frame made here comes in the chunks its generator makes.
    """
    wanted = None if columns is None else list(columns)
    if isinstance(frame, pl.DataFrame):
        yield from (frame if wanted is None else frame.select(wanted)).iter_slices(rows or CHUNK_ROWS)
        return
    loop = _loop(frame)
    if loop is None:
        yield from (frame if wanted is None else frame.select(wanted)).collect_batches(chunk_size=rows or CHUNK_ROWS)
        return
    for chunk in loop(wanted):
        yield chunk if wanted is None else chunk.select(wanted)  # a generator may give more columns than asked


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

    frame = register_io_source(read, schema=pl.Schema(schema))
    _LOOPS[id(frame)] = source
    weakref.finalize(frame, _LOOPS.pop, id(frame), None)
    return frame


def chunked(
    frame: Frame, fn: Callable[[pl.DataFrame, int], pl.DataFrame], schema: pl.Schema | dict, reads=()
) -> pl.LazyFrame:
    """`frame`'s rows through `fn(chunk, index of the chunk's first row)`, lazily, one chunk at a time.

    `schema` is what `fn` returns; `reads` names the columns of `frame` that `fn` needs even when
    a projection does not ask for them (the others are read only when asked for).
    """
    names = lazy(frame).collect_schema().names()

    def source(wanted: list[str] | None) -> Iterator[pl.DataFrame]:
        columns = None
        if wanted is not None:
            keep = set(wanted) | set(reads)
            columns = [n for n in names if n in keep] or names[:1]  # a chunk needs a column to have rows
        offset = 0
        for chunk in batches(frame, columns=columns):
            yield fn(chunk, offset)
            offset += chunk.height

    return from_chunks(source, schema)


def where(frame: Frame, predicate: pl.Expr) -> Frame:
    """The rows of `frame` for which `predicate` holds (lazily for a lazy frame), chunk by chunk."""
    if _loop(frame) is None:
        return frame.filter(predicate)
    return chunked(frame, lambda chunk, _: chunk.filter(predicate), frame.collect_schema(), predicate.meta.root_names())


def select(frame: Frame, columns: Sequence[str]) -> Frame:
    """`frame`'s `columns`, in that order (lazily for a lazy frame)."""
    if _loop(frame) is None:
        return frame.select(columns)
    schema = frame.collect_schema()
    return chunked(frame, lambda chunk, _: chunk.select(columns), {c: schema[c] for c in columns}, columns)


def concat(parts: Sequence[Frame]) -> pl.LazyFrame:
    """The frames' rows one frame after the other, lazily; a column's type is the supertype of its types."""
    parts = [lazy(p) for p in parts]
    if not any(_loop(p) for p in parts):
        return pl.concat(parts, how="vertical_relaxed")
    schema = pl.concat([pl.DataFrame(schema=p.collect_schema()) for p in parts], how="vertical_relaxed").schema

    def source(wanted: list[str] | None) -> Iterator[pl.DataFrame]:
        for part in parts:
            for chunk in batches(part, columns=wanted):
                yield chunk.cast({n: schema[n] for n in chunk.columns})

    return from_chunks(source, schema)


def beside(frame: Frame, columns: pl.DataFrame) -> pl.LazyFrame:
    """`frame` with `columns` (a frame of as many rows, in the same order) added to its right, chunk by chunk."""

    def add(chunk: pl.DataFrame, offset: int) -> pl.DataFrame:
        if offset + chunk.height > columns.height:
            raise ValueError(f"beside: the frame has more rows than the {columns.height} of {columns.columns}")
        return chunk.hstack(columns.slice(offset, chunk.height))

    return chunked(frame, add, {**lazy(frame).collect_schema(), **columns.schema})


def rows_where(frame: Frame, keep: pl.Series) -> pl.LazyFrame:
    """The rows of `frame` whose entry in `keep` (a bool per row, in order) is true, chunk by chunk."""
    schema = lazy(frame).collect_schema()
    return chunked(frame, lambda chunk, offset: chunk.filter(keep.slice(offset, chunk.height)), schema)


def write_parquet(frame: Frame, destination: str | os.PathLike | IO[bytes]) -> None:
    """Write a frame in row groups of CHUNK_ROWS rows; a lazy one streams, never held whole."""
    if isinstance(frame, pl.DataFrame):
        frame.write_parquet(destination, row_group_size=CHUNK_ROWS)
    elif _loop(frame) is None:
        frame.sink_parquet(destination, row_group_size=CHUNK_ROWS)
    elif hasattr(destination, "write"):
        _write_chunks(frame, destination)
    else:
        try:
            with open(destination, "wb") as f:
                _write_chunks(frame, f)
        except BaseException:
            Path(destination).unlink(missing_ok=True)
            raise


def _write_chunks(frame: pl.LazyFrame, f: IO[bytes]) -> None:
    """Our loop's chunks to Parquet. pyarrow encodes each on a thread of its own (it lets go of the interpreter
    lock) while the loop makes the next. If anything fails, the file gets no footer: unreadable, never a
    shorter frame that looks whole."""
    schema = frame.collect_schema()
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
    sink = _Sink(f)
    writer = pq.ParquetWriter(sink, arrow_schema, **PARQUET_WRITER)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="parquet-writer") as encoder:
            pending = None
            for chunk in batches(frame):
                table = chunk.select(schema.names()).cast(dict(schema)).to_arrow().cast(arrow_schema)
                if pending is not None:
                    pending.result()  # at most one chunk waits while another is encoded
                pending = encoder.submit(writer.write_table, table, row_group_size=CHUNK_ROWS)
            if pending is not None:
                pending.result()
    except BaseException:
        sink.cut = True
        writer.close()  # its footer goes nowhere
        raise
    writer.close()


class _Sink(io.RawIOBase):
    """A file's writes, until `cut`: then none reach it."""

    def __init__(self, f: IO[bytes]):
        super().__init__()
        self.f, self.cut, self.position = f, False, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if not self.cut:
            self.f.write(data)
        self.position += size
        return size

    def tell(self) -> int:
        return self.position

    def close(self) -> None:  # the file is its owner's to close
        pass


def scan_parquet(path: str | os.PathLike | Callable[[], IO[bytes]]) -> pl.LazyFrame:
    """A Parquet file (a path, or a function that opens it: an object store's), read lazily, CHUNK_ROWS rows at
    a time by pyarrow in our loop: polars' own scan, streamed to a slower consumer, reads ahead of it."""
    open_file = path if callable(path) else lambda: open(path, "rb")  # noqa: SIM115 (closed by its caller)
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
