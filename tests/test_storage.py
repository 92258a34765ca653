"""The artifact root as a local folder (unchanged) or an object-store URL, on fsspec's in-memory file system."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from upath import UPath

from distill_assets.definitions import build_definitions
from distill_assets.spec import load_spec
from resources.storage import ArtifactStore, ParquetIOManager

parts = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=parts)
def numbers(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.DataFrame({"key": [context.partition_key] * 3, "x": [1, 2, 3]})


@dg.asset
def total(numbers: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(numbers.values()).group_by("key").agg(pl.col("x").sum()).sort("key")


def materialize_both(store: ArtifactStore) -> pl.DataFrame:
    resources = {"io_manager": ParquetIOManager(store=store)}
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("a", "b"):
            assert dg.materialize([numbers], partition_key=key, resources=resources, instance=instance).success
        result = dg.materialize([numbers, total], selection=[total], resources=resources, instance=instance)
        assert result.success
        return result.output_for_node("total")


def test_local_root_is_unchanged(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    assert store.frame_path("numbers", "a") == tmp_path / "frames/numbers/a.parquet"
    assert type(store.frame_path("numbers", "a")) is type(Path())  # a plain Path, not a UPath
    assert materialize_both(store)["x"].to_list() == [6, 6]
    assert pl.read_parquet(tmp_path / "frames/total/data.parquet").height == 2
    assert store.publish_checkpoint("s") == str(tmp_path / "checkpoints/s")


def test_object_store_root_holds_the_frames(tmp_path, memory_root):
    store = ArtifactStore(root=memory_root, local_root=str(tmp_path / "local"))
    assert store.is_remote and isinstance(store.frame_path("numbers", "a"), UPath)
    assert materialize_both(store)["x"].to_list() == [6, 6]
    stored = UPath(memory_root) / "frames"
    assert sorted(p.name for p in (stored / "numbers").iterdir()) == ["a.parquet", "b.parquet"]
    with (stored / "total/data.parquet").open("rb") as f:
        assert pl.read_parquet(f).height == 2
    assert not (tmp_path / "local/frames").exists()  # nothing of it on the local disk
    assert store.generation_cache_path() == tmp_path / "local/cache/generations.sqlite"  # SQLite stays local


def test_checkpoints_are_published_and_fetched_on_another_machine(tmp_path, memory_root):
    writer = ArtifactStore(root=memory_root, local_root=str(tmp_path / "writer"))
    checkpoint = writer.checkpoint_dir("student_m", fetch=False)
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights v1")
    (checkpoint / "training_metrics.json").write_text('{"run": 1}')
    assert writer.publish_checkpoint("student_m").startswith(f"{memory_root}/checkpoints/student_m/")  # a version

    reader = ArtifactStore(root=memory_root, local_root=str(tmp_path / "reader"))
    fetched = reader.checkpoint_dir("student_m")
    assert (fetched / "model.safetensors").read_bytes() == b"weights v1"

    (checkpoint / "model.safetensors").write_bytes(b"weights v2")  # retrained: the marker changes too
    (checkpoint / "training_metrics.json").write_text('{"run": 2}')
    writer.publish_checkpoint("student_m")
    assert (reader.checkpoint_dir("student_m") / "model.safetensors").read_bytes() == b"weights v2"


def test_url_root_without_local_root_is_a_clear_error(memory_root):
    with pytest.raises(ValueError, match="set local_root"):
        ArtifactStore(root=memory_root).path("cache")


def test_spec_storage_root_may_be_a_url(spec_file, memory_root, monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_STORAGE_ROOT", memory_root)
    monkeypatch.setenv("DISTILL_LOCAL_ROOT", str(tmp_path / "work"))
    spec = load_spec(spec_file)
    assert spec.storage_location() == memory_root
    assert spec.storage_path() == tmp_path / "work"

    defs = build_definitions(spec_file)
    with dg.DagsterInstance.ephemeral() as instance:
        selection = [dg.AssetKey("curated_inputs"), dg.AssetKey("eval_set"), dg.AssetKey("dev_set")]  # one multi-asset
        result = dg.materialize(
            list(defs.assets), selection=selection, partition_key="dates", resources=dict(defs.resources),
            instance=instance,
        )  # fmt: skip
    assert result.success
    with (UPath(memory_root) / "frames/curated_inputs/dates.parquet").open("rb") as f:
        assert pl.read_parquet(f).height == 12


def test_local_spec_root_is_unchanged(spec_file):
    spec = load_spec(spec_file)
    assert spec.storage_location() == str(spec_file.parent / "artifacts") == str(spec.storage_path())
