"""Where artifacts live: one storage root for frames (parquet), checkpoints and reports."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field


def _safe(partition_key: str) -> str:
    """A file name for a partition key ('teacher_a|dates' -> 'teacher_a__dates')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "__", partition_key)


class ArtifactStore(dg.ConfigurableResource):
    """The artifact root: parquet frames, checkpoints, exports and reports sit under it."""

    root: str = Field(description="absolute path of the storage root")

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)

    def checkpoint_dir(self, student: str) -> Path:
        return self.path("checkpoints", student)

    def generation_cache_path(self) -> Path:
        """The SQLite generation cache every teacher backend shares (resources/generation_cache.py)."""
        return self.path("cache", "generations.sqlite")

    def frame_path(self, asset: str, partition_key: str | None = None) -> Path:
        name = f"{_safe(partition_key)}.parquet" if partition_key else "data.parquet"
        return self.path("frames", asset, name)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores polars frames as parquet under the artifact root, one file per partition.

    A partitioned asset that maps to one upstream partition receives that frame; an
    unpartitioned one (or one that maps to several) receives a dict keyed by partition.
    """

    store: ArtifactStore

    def _asset_name(self, context: dg.OutputContext | dg.InputContext) -> str:
        return "/".join(context.asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a polars DataFrame, got {type(obj)}")
        key = context.partition_key if context.has_asset_partitions else None
        path = self.store.frame_path(self._asset_name(context), key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        obj.write_parquet(tmp)
        tmp.replace(path)  # readers never see a half-written file
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "dagster/row_count": obj.height})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | dict[str, pl.DataFrame]:
        name = self._asset_name(context)
        if not context.has_asset_partitions:
            return pl.read_parquet(self.store.frame_path(name))
        keys = context.asset_partition_keys
        if context.has_partition_key and len(keys) == 1:
            return pl.read_parquet(self.store.frame_path(name, keys[0]))
        return {key: pl.read_parquet(self.store.frame_path(name, key)) for key in keys}
