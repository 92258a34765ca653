"""Where artifacts live: one storage root for frames (parquet), checkpoints and reports."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field
from upath import UPath

from distill_assets.frames import Frame, parquet_rows, scan_parquet, write_parquet
from distill_assets.spec import is_url
from resources import checkpoint_store


def partition_file_stem(partition_key: str) -> str:
    """A file name (without suffix) for a partition key ('teacher_a|dates' -> 'teacher_a__dates')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "__", partition_key)


class ArtifactStore(dg.ConfigurableResource):
    """The artifact root: parquet frames, checkpoints, exports and reports sit under it.

    The root is a local folder, or an object-store URL that fsspec knows (s3://bucket/prefix,
    gs://, az://, memory:// in tests) through universal-pathlib. With a URL root, frames go to
    the store directly; what needs a local file system (the SQLite generation cache, a
    checkpoint while it is written, exports, the report) goes under `local_root`, and a
    finished checkpoint is published to the store, where another machine's step fetches it.
    """

    root: str = Field(description="absolute path of the storage root, or an object-store URL")
    local_root: str | None = Field(None, description="the local working folder when root is a URL")

    @property
    def is_remote(self) -> bool:
        return is_url(self.root)

    def url(self, *parts: str) -> Path | UPath:
        """Where an artifact lives in the store: a Path for a local root, a UPath for a URL."""
        if not self.is_remote:
            return self.path(*parts)
        return UPath(self.root).joinpath(*parts)

    def path(self, *parts: str) -> Path:
        """A local file-system path: under the root, or under local_root when the root is a URL."""
        if self.is_remote:
            if not self.local_root:
                raise ValueError(f"ArtifactStore: root {self.root!r} is a URL; set local_root to a local folder")
            return Path(self.local_root).joinpath(*parts)
        return Path(self.root.removeprefix("file://")).joinpath(*parts)

    def checkpoint_dir(self, student: str, fetch: bool = True) -> Path:
        """The student's local checkpoint folder; with a URL root, the store's current version fetched into it.

        The fetch happens only when the store's version differs from the local one, and it goes
        through a temporary folder renamed into place (resources/checkpoint_store.py).
        """
        local = self.path("checkpoints", student)
        if fetch and self.is_remote:
            checkpoint_store.fetch(self.url("checkpoints", student), local)
        return local

    def publish_checkpoint(self, student: str) -> str:
        """Publish a finished local checkpoint to the store (nothing to do for a local root); where it is.

        With a URL root it is the new version's prefix (checkpoints/<student>/<version>), which
        readers switch to only once every file and the manifest are there.
        """
        local = self.checkpoint_dir(student, fetch=False)
        if not self.is_remote:
            return str(local)
        return str(checkpoint_store.publish(local, self.url("checkpoints", student)))

    def generation_cache_path(self) -> Path:
        """The SQLite generation cache every teacher backend shares (resources/generation_cache.py)."""
        return self.path("cache", "generations.sqlite")

    def frame_path(self, asset: str, partition_key: str | None = None) -> Path | UPath:
        name = f"{partition_file_stem(partition_key)}.parquet" if partition_key else "data.parquet"
        return self.url("frames", asset, name)


AS_DICT = "distill/partitions_as_dict"
LAZY = "distill/lazy"


def partitions_in(mapping: dg.PartitionMapping | None = None, lazy: bool = False) -> dg.AssetIn:
    """An input that arrives as a dict keyed by partition, whether it maps to one partition or many.

    Without it Dagster's rule applies: an input that resolves to a single upstream partition
    is handed over as that partition's frame, so an asset reading "all tasks" would get a
    bare frame the day the spec has one task. With `lazy`, each partition is a lazy scan
    (for an asset whose parameters are not annotated, such as one taking `**inputs`).
    """
    return dg.AssetIn(partition_mapping=mapping or dg.AllPartitionMapping(), metadata={AS_DICT: True, LAZY: lazy})


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores polars frames as parquet under the artifact root, one file per partition.

    An asset returns a DataFrame, or a LazyFrame that is streamed to the file (never held
    whole). An input annotated `pl.LazyFrame` (or `dict[str, pl.LazyFrame]`) arrives as a lazy
    scan of the file, to read in chunks; any other input as a DataFrame. A partitioned asset
    that maps to one upstream partition receives that frame; an unpartitioned one (or one that
    maps to several, or an input made with `partitions_in`) receives a dict keyed by partition.
    """

    store: ArtifactStore

    def _asset_name(self, context: dg.OutputContext | dg.InputContext) -> str:
        return "/".join(context.asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | pl.LazyFrame) -> None:
        if not isinstance(obj, pl.DataFrame | pl.LazyFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected a polars DataFrame or LazyFrame, got {type(obj)}"
            )
        key = context.partition_key if context.has_asset_partitions else None
        path = self.store.frame_path(self._asset_name(context), key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(path, UPath):  # an object store: one PUT, which readers see whole or not at all
            with path.open("wb") as f:
                write_parquet(obj, f)
            with path.open("rb") as f:
                rows = parquet_rows(f)
        else:
            tmp = path.with_suffix(".tmp")
            write_parquet(obj, str(tmp))
            rows = parquet_rows(str(tmp))
            tmp.replace(path)  # readers never see a half-written file
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "dagster/row_count": rows})

    def load_input(self, context: dg.InputContext) -> Frame | dict[str, Frame]:
        name = self._asset_name(context)
        load = scan_frame if wants_lazy(context) else read_frame
        if not context.has_asset_partitions:
            return load(self.store.frame_path(name))
        keys = context.asset_partition_keys
        if context.has_partition_key and len(keys) == 1 and not context.definition_metadata.get(AS_DICT):
            return load(self.store.frame_path(name, keys[0]))
        return {key: load(self.store.frame_path(name, key)) for key in keys}


def wants_lazy(context: dg.InputContext) -> bool:
    return is_lazy_input(context.dagster_type, context.definition_metadata)


def is_lazy_input(dagster_type: dg.DagsterType | None, metadata: dict | None) -> bool:
    """Whether an input is annotated `pl.LazyFrame` or `dict[str, pl.LazyFrame]`, or made with `lazy=True`."""
    hint = dagster_type.typing_type if dagster_type else None
    return bool(hint is pl.LazyFrame or pl.LazyFrame in typing.get_args(hint) or (metadata or {}).get(LAZY))


def read_frame(path: Path | UPath) -> pl.DataFrame:
    """A parquet frame from a local path or an object-store URL, in memory."""
    if isinstance(path, UPath):
        with path.open("rb") as f:
            return pl.read_parquet(f)
    return pl.read_parquet(path)


def scan_frame(path: Path | UPath) -> pl.LazyFrame:
    """A parquet frame from a local path or an object-store URL, as a lazy scan read a row group at a time."""
    return scan_parquet((lambda: path.open("rb")) if isinstance(path, UPath) else path)
