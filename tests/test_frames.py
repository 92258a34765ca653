"""Frames read, written and hashed a chunk at a time: the IO manager's lazy outputs and inputs, and data versions."""

import io
import itertools
import uuid

import dagster as dg
import fsspec
import polars as pl
import pytest
from upath import UPath

from distill_assets import frames
from distill_assets.versions import frame_version
from resources.storage import ArtifactStore, ParquetIOManager, partitions_in, scan_frame
from tests.topk_frames import topk_frame


@pytest.fixture
def memory_root():
    root = f"memory://distill-frames-{uuid.uuid4().hex[:8]}/artifacts"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(UPath(root).path):
        fs.rm(UPath(root).path, recursive=True)


ROWS = frames.CHUNK_ROWS + 500  # more than one chunk and one row group
parts = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=parts)
def completions(context: dg.AssetExecutionContext) -> pl.LazyFrame:
    return topk_frame(ROWS, teacher=context.partition_key).lazy()  # streamed to its file


@dg.asset(partitions_def=parts)
def doubled(completions: pl.LazyFrame) -> pl.LazyFrame:
    return completions.with_columns(num_tokens=pl.col("num_tokens") * 2)


@dg.asset(ins={"completions": partitions_in(lazy=True)})
def per_teacher(completions) -> pl.DataFrame:
    assert all(isinstance(f, pl.LazyFrame) for f in completions.values())
    return pl.concat(completions.values()).group_by("teacher").agg(rows=pl.len()).sort("teacher").collect()


@dg.asset
def eager_total(doubled: dict[str, pl.DataFrame]) -> pl.DataFrame:
    assert all(isinstance(f, pl.DataFrame) for f in doubled.values())
    return pl.DataFrame({"tokens": [sum(int(f["num_tokens"].sum()) for f in doubled.values())]})


@dg.asset
def lazy_total(doubled: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    return pl.concat(doubled.values()).select(pl.col("num_tokens").sum())


def materialize_all(store: ArtifactStore) -> dict:
    resources = {"io_manager": ParquetIOManager(store=store)}
    assets = [completions, doubled, per_teacher, eager_total, lazy_total]
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("a", "b"):
            result = dg.materialize(assets[:2], partition_key=key, resources=resources, instance=instance)
            assert result.success
            rows = result.asset_materializations_for_node("completions")[0].metadata["dagster/row_count"]
            assert rows.value == ROWS
        result = dg.materialize(assets, selection=assets[2:], resources=resources, instance=instance)
        assert result.success
        return {name: result.output_for_node(name) for name in ("per_teacher", "eager_total", "lazy_total")}


@pytest.mark.parametrize("where", ["local", "memory"])
def test_lazy_outputs_and_inputs_through_the_io_manager(where, tmp_path, memory_root):
    store = ArtifactStore(root=str(tmp_path)) if where == "local" else ArtifactStore(root=memory_root)
    out = materialize_all(store)
    assert out["per_teacher"].rows() == [("a", ROWS), ("b", ROWS)]
    assert out["eager_total"]["tokens"].item() == 2 * ROWS * 4 * 2
    stored = scan_frame(store.frame_path("doubled", "a"))
    assert isinstance(stored, pl.LazyFrame)
    assert stored.select("topk_ids").collect().equals(topk_frame(ROWS, teacher="a").select("topk_ids"))
    with (store.frame_path("completions", "a")).open("rb") as f:  # written in row groups of CHUNK_ROWS rows
        import pyarrow.parquet as pq

        assert pq.ParquetFile(f).metadata.num_row_groups == 2


def test_an_object_store_frame_is_scanned_a_row_group_at_a_time(memory_root):
    path = UPath(memory_root) / "f.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = topk_frame(ROWS)
    with path.open("wb") as f:
        frames.write_parquet(frame.lazy(), f)
    scanned = scan_frame(path)
    assert scanned.collect_schema() == frame.schema
    assert scanned.collect().equals(frame)
    assert scanned.select(pl.len()).collect().item() == ROWS
    tail = scanned.filter(pl.col("prompt_id") == f"dates-{ROWS - 1}").select("prompt_id", "topk_ids").collect()
    assert tail.row(0) == frame.select("prompt_id", "topk_ids").row(ROWS - 1)
    assert scanned.head(3).select("prompt").collect().height == 3


def test_beside_and_rows_where_keep_rows_aligned_across_chunks():
    frame = topk_frame(ROWS)
    marks = pl.DataFrame({"mark": [i % 3 == 0 for i in range(ROWS)], "i": list(range(ROWS))})
    together = frames.beside(frame.lazy(), marks)
    assert together.collect().equals(frame.hstack(marks))
    assert together.select("i").collect()["i"].to_list() == list(range(ROWS))  # projected: only what is asked
    assert together.select(pl.len()).collect().item() == ROWS
    kept = frames.rows_where(together, marks["mark"]).collect()
    assert kept["i"].to_list() == [i for i in range(ROWS) if i % 3 == 0]
    assert kept["topk_ids"].to_list() == frame.filter(marks["mark"])["topk_ids"].to_list()
    with pytest.raises(Exception, match="more rows"):
        frames.beside(frame.lazy(), marks.head(10)).collect()


def test_frame_version_is_the_same_however_the_frame_is_chunked():
    frame = topk_frame(ROWS, seed=1)
    version = frame_version(frame)
    assert frame_version(frame.lazy()) == version
    assert frame_version(pl.concat([frame.head(7), frame.tail(ROWS - 7)], rechunk=False)) == version
    for rows in (7, 1000, ROWS * 2):
        assert frame_version(frame, rows=rows) == frame_version(frame.lazy(), rows=rows) == version
    small = frame.head(40).with_columns(
        messages=pl.Series([[{"role": "user", "content": "x" * i}] * (i % 3) for i in range(40)])
    )
    assert frame_version(small, rows=1) == frame_version(small, rows=3) == frame_version(small)
    assert frame_version(frames.beside(frame.lazy(), pl.DataFrame({"x": range(ROWS)})).drop("x")) == version


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.with_columns(topk_logprobs=pl.col("topk_logprobs").list.reverse()),  # one column's values move
        lambda f: f.with_columns(completion=pl.col("completion").str.replace("answer 5 ", "answer 5")),
        lambda f: f.with_columns(topk_tokens=pl.lit([["a"]], pl.List(pl.List(pl.String)))),  # null -> value
        lambda f: f.slice(1),
        lambda f: f.with_columns(num_tokens=pl.col("num_tokens").cast(pl.Int32)),  # the schema
        lambda f: f.reverse(),
    ],
)
def test_frame_version_changes_with_the_content(change):
    frame = topk_frame(50, seed=2)
    assert frame_version(change(frame)) != frame_version(frame)


def test_frame_version_tells_nested_boundaries_and_nulls_apart():
    ids = pl.List(pl.List(pl.Int32))
    one = pl.DataFrame({"x": [[[1, 2], [3]]]}, schema={"x": ids})
    other = pl.DataFrame({"x": [[[1], [2, 3]]]}, schema={"x": ids})
    empty, null = pl.DataFrame({"x": [[]]}, schema={"x": ids}), pl.DataFrame({"x": [None]}, schema={"x": ids})
    assert len({frame_version(f) for f in (one, other, empty, null)}) == 4
    text = pl.DataFrame({"s": ["ab", "c"]}), pl.DataFrame({"s": ["a", "bc"]}), pl.DataFrame({"s": ["", None]})
    assert len({frame_version(f) for f in text}) == 3


def test_chained_chunk_loops_run_a_chunk_at_a_time_outside_polars_engine(tmp_path):
    """A source, a filter, a map, a row selection and a concatenation, iterated and written to Parquet: the
    source makes a chunk only once the one before it has been taken (polars' engine, given such loops, reads
    many chunks ahead of its sink)."""
    names = [f"c{i}" for i in range(3)]
    progress = {"made": 0, "taken": 0, "written": 0}
    ahead, written_at = [], []  # when each chunk is made: chunks made but not taken, bytes written

    def source(wanted):
        for i in range(12):
            ahead.append(progress["made"] - progress["taken"])
            written_at.append(progress["written"])
            progress["made"] += 1
            yield pl.DataFrame({"i": range(i * 100, (i + 1) * 100), **{n: [float(i)] * 100 for n in names}})

    schema = {"i": pl.Int64, **{n: pl.Float64 for n in names}}
    even = frames.where(frames.from_chunks(source, schema), pl.col("i") % 2 == 0)
    first = {**schema, "first": pl.Int64}
    tagged = frames.chunked(even, lambda chunk, offset: chunk.with_columns(first=pl.lit(offset)), first)
    both = frames.concat([frames.rows_where(tagged, pl.Series([i % 3 != 0 for i in range(600)]))] * 2)

    for chunk in frames.batches(both, columns=["c1"]):
        assert chunk.columns == ["c1"]
        progress["taken"] += 1
    assert progress["made"] == 24 and max(ahead) <= 1

    class Sink(io.BytesIO):
        def write(self, data) -> int:
            progress["written"] += len(data)
            return super().write(data)

    written_at.clear()
    frames.write_parquet(both, Sink())
    assert all(later > earlier for earlier, later in itertools.pairwise(written_at[2:]))
    frames.write_parquet(both, tmp_path / "out.parquet")
    written = pl.read_parquet(tmp_path / "out.parquet")
    assert written["i"].to_list() == [i for i in range(0, 1200, 2) if (i // 2) % 3 != 0] * 2
    assert written.schema == both.collect_schema()
    assert written.filter(pl.col("i") == 202)["first"].to_list() == [100, 100]  # the chunk's first row after the filter


def test_a_parquet_scan_is_read_in_our_loop_and_rewritten_in_row_groups(tmp_path):
    frame = topk_frame(ROWS)
    frame.write_parquet(tmp_path / "in.parquet", row_group_size=700)
    scanned = frames.scan_parquet(tmp_path / "in.parquet")
    keep = pl.Series([i % 2 == 0 for i in range(ROWS)])
    frames.write_parquet(frames.rows_where(scanned, keep), tmp_path / "out.parquet")
    assert pl.read_parquet(tmp_path / "out.parquet").equals(frame.filter(keep))
    assert scanned.select(pl.len()).collect().item() == ROWS  # polars' own operations still work on it


def test_a_write_that_fails_half_way_leaves_nothing_that_reads_as_a_frame(tmp_path):
    def source(wanted):
        for i in range(5):
            if i == 3:
                raise RuntimeError("the teacher's store went away")
            yield pl.DataFrame({"i": range(i * 10, i * 10 + 10)})

    failing = frames.from_chunks(source, {"i": pl.Int64})
    with pytest.raises(RuntimeError, match="went away"):
        frames.write_parquet(failing, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
    f = io.BytesIO()
    with pytest.raises(RuntimeError, match="went away"):
        frames.write_parquet(failing, f)
    assert f.getvalue()[:4] == b"PAR1" and f.getvalue()[-4:] != b"PAR1"  # row groups but no footer
    with pytest.raises(pl.exceptions.ComputeError, match="must end with PAR1"):
        pl.read_parquet(io.BytesIO(f.getvalue()))
