"""Checkpoints on an object store: a publish or a fetch cut off half way never shows readers a partial checkpoint.

The stores are fsspec's in-memory one (`memory://`) and its local one (`local://`, a folder
on this disk reached through fsspec as an object store would be), which a killed child
process shares with the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from upath import UPath

from distill_assets.definitions import build_definitions
from distill_assets.versions import LINEAGE_FILE, MANIFEST_FILE, checkpoint_version
from resources import checkpoint_store
from resources.checkpoint_store import IncompleteCheckpoint
from resources.storage import ArtifactStore
from tests.test_pipes_training import demo_training_set, pipes_spec

ROOT = Path(__file__).resolve().parent.parent
FILES = ("config.json", "model.safetensors", "tokenizer.json", "sub/extra.bin")


def write_checkpoint(folder: Path, run: int) -> Path:
    """A checkpoint whose every file says which training run wrote it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"{name} of run {run}\n")
    return folder


def run_of(folder: Path) -> set[str]:
    """Which runs the files of a local checkpoint come from (one element when it is whole)."""
    return {(folder / name).read_text().rsplit(" ", 1)[-1].strip() for name in FILES}


def stores(root: str, tmp_path: Path) -> tuple[ArtifactStore, ArtifactStore]:
    """A writer and a reader on two 'machines': the same store, two local folders."""
    return (
        ArtifactStore(root=root, local_root=str(tmp_path / "writer")),
        ArtifactStore(root=root, local_root=str(tmp_path / "reader")),
    )


def test_publish_layout_versions_manifest_and_pointer(tmp_path, memory_root):
    writer, reader = stores(memory_root, tmp_path)
    local = write_checkpoint(writer.checkpoint_dir("s", fetch=False), run=1)
    stored_at = writer.publish_checkpoint("s")

    remote = UPath(memory_root) / "checkpoints/s"
    manifest = json.loads((UPath(stored_at) / MANIFEST_FILE).read_text())
    assert stored_at == f"{memory_root}/checkpoints/s/{manifest['version']}"
    assert json.loads((remote / "current").read_text()) == {"version": manifest["version"], "previous": None}
    assert [f["path"] for f in manifest["files"]] == sorted(FILES)
    model = next(f for f in manifest["files"] if f["path"] == "model.safetensors")
    assert model["size"] == (local / "model.safetensors").stat().st_size
    assert model["sha256"] == checkpoint_store.file_sha256(local / "model.safetensors")

    fetched = reader.checkpoint_dir("s")
    assert run_of(fetched) == {"1"} and json.loads((fetched / MANIFEST_FILE).read_text()) == manifest
    assert not checkpoint_store.fetch(remote, fetched)  # up to date: nothing fetched again
    assert not checkpoint_store.fetch(remote, local)  # the writer's own copy is that version: no download


def test_a_complete_publish_switches_readers_and_keeps_the_previous_version(tmp_path, memory_root):
    writer, reader = stores(memory_root, tmp_path)
    local = writer.checkpoint_dir("s", fetch=False)
    versions = []
    for run in (1, 2, 3):
        write_checkpoint(local, run)
        versions.append(UPath(writer.publish_checkpoint("s")).name)
        assert run_of(reader.checkpoint_dir("s")) == {str(run)}
    remote = UPath(memory_root) / "checkpoints/s"
    assert json.loads((remote / "current").read_text()) == {"version": versions[2], "previous": versions[1]}
    assert sorted(p.name for p in remote.iterdir() if p.is_dir()) == sorted(versions[1:])  # run 1's is deleted


def test_a_publish_that_fails_half_way_leaves_the_previous_version(tmp_path, memory_root, monkeypatch):
    writer, reader = stores(memory_root, tmp_path)
    local = write_checkpoint(writer.checkpoint_dir("s", fetch=False), run=1)
    first = writer.publish_checkpoint("s")
    assert run_of(reader.checkpoint_dir("s")) == {"1"}

    write_checkpoint(local, run=2)
    uploaded = []
    real_put = MemoryFileSystem.put_file

    def put_then_fail(self, lpath, rpath, *args, **kwargs):
        if len(uploaded) == 2:
            raise ConnectionError("the store went away")
        uploaded.append(rpath)
        return real_put(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", put_then_fail)
    with pytest.raises(ConnectionError):
        writer.publish_checkpoint("s")
    monkeypatch.undo()

    assert len(uploaded) == 2 and not any(first in path for path in uploaded)
    fresh_reader = ArtifactStore(root=memory_root, local_root=str(tmp_path / "fresh"))
    assert run_of(fresh_reader.checkpoint_dir("s")) == {"1"}  # a new reader gets the previous version
    assert run_of(reader.checkpoint_dir("s")) == {"1"}

    assert UPath(writer.publish_checkpoint("s")).name != UPath(first).name  # a rerun completes it
    assert run_of(reader.checkpoint_dir("s")) == {"2"}


CHILD = """
import os, sys, time
from pathlib import Path
from upath import UPath
from fsspec.implementations.local import LocalFileSystem
from resources import checkpoint_store

action, remote, local, ready, after = sys.argv[1:6]
done = []
def stall_after(real):
    def wrapped(self, *args, **kwargs):
        if len(done) == int(after):
            Path(ready).write_text("stalled")
            time.sleep(600)  # killed here by the test
        done.append(args)
        return real(self, *args, **kwargs)
    return wrapped
if action == "publish":
    LocalFileSystem.put_file = stall_after(LocalFileSystem.put_file)
    checkpoint_store.publish(Path(local), UPath(remote))
else:
    LocalFileSystem.get_file = stall_after(LocalFileSystem.get_file)
    checkpoint_store.fetch(UPath(remote), Path(local))
"""


def killed_half_way(action: str, remote: UPath, local: Path, tmp_path: Path, after: int = 2) -> None:
    """Run a publish or a fetch in a child process and SIGKILL it once `after` files have gone through."""
    ready = tmp_path / f"ready-{uuid.uuid4().hex[:6]}"
    args = [action, str(remote), str(local), str(ready), str(after)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), *args], cwd=ROOT, env=env)
    try:
        while not ready.exists():
            assert child.poll() is None, f"the child ended (rc {child.returncode}) before it stalled"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def test_a_publish_killed_half_way_leaves_the_previous_version(tmp_path):
    root = f"local://{tmp_path / 'bucket'}"
    writer, reader = stores(root, tmp_path)
    local = write_checkpoint(writer.checkpoint_dir("s", fetch=False), run=1)
    writer.publish_checkpoint("s")
    remote = UPath(root) / "checkpoints/s"
    before = (remote / "current").read_text()

    write_checkpoint(local, run=2)
    killed_half_way("publish", remote, local, tmp_path)
    partial = [p for p in remote.iterdir() if p.is_dir() and not (p / MANIFEST_FILE).exists()]
    assert len(partial) == 1 and len([f for f in partial[0].rglob("*") if f.is_file()]) == 2  # the killed upload
    assert (remote / "current").read_text() == before
    assert run_of(reader.checkpoint_dir("s")) == {"1"}

    writer.publish_checkpoint("s")  # the rerun's publish completes and switches readers
    assert run_of(reader.checkpoint_dir("s")) == {"2"}


def test_a_fetch_killed_half_way_leaves_no_folder_at_the_final_path(tmp_path):
    root = f"local://{tmp_path / 'bucket'}"
    writer, reader = stores(root, tmp_path)
    write_checkpoint(writer.checkpoint_dir("s", fetch=False), run=1)
    writer.publish_checkpoint("s")
    remote, local = UPath(root) / "checkpoints/s", reader.checkpoint_dir("s", fetch=False)

    killed_half_way("fetch", remote, local, tmp_path)
    assert not local.exists()
    assert [p.name for p in local.parent.iterdir() if p.name.startswith(".s.fetch-")]  # the killed fetch's
    assert run_of(reader.checkpoint_dir("s")) == {"1"}  # the next fetch completes it, and clears the leftover
    assert not [p for p in local.parent.iterdir() if p.name.startswith((".s.fetch-", ".s.old-"))]

    write_checkpoint(writer.checkpoint_dir("s", fetch=False), run=2)
    writer.publish_checkpoint("s")
    killed_half_way("fetch", remote, local, tmp_path)
    assert run_of(local) == {"1"}  # a refetch cut off half way leaves the last whole one in place
    assert run_of(reader.checkpoint_dir("s")) == {"2"}


def test_readers_refuse_a_version_whose_files_differ_from_its_manifest(tmp_path, memory_root, monkeypatch):
    writer, reader = stores(memory_root, tmp_path)
    write_checkpoint(writer.checkpoint_dir("s", fetch=False), run=1)
    version = UPath(writer.publish_checkpoint("s"))
    with (version / "config.json").open("w") as f:  # the same size, other bytes
        f.write("config.json of run 9\n")
    with pytest.raises(IncompleteCheckpoint, match=r"config\.json: its bytes differ"):
        reader.checkpoint_dir("s")
    assert not reader.checkpoint_dir("s", fetch=False).exists()

    (version / "tokenizer.json").unlink()
    with pytest.raises(IncompleteCheckpoint, match=r"1 file\(s\) of its manifest missing: \['tokenizer.json'\]"):
        reader.checkpoint_dir("s")


def test_nothing_published_leaves_the_local_folder_alone(tmp_path, memory_root):
    _, reader = stores(memory_root, tmp_path)
    assert not reader.checkpoint_dir("s").exists()
    assert ArtifactStore(root=str(tmp_path / "plain")).publish_checkpoint("s") == str(tmp_path / "plain/checkpoints/s")


def test_the_lineage_file_is_published_inside_the_checkpoint(tmp_path, memory_root):
    writer, reader = stores(memory_root, tmp_path)
    local = write_checkpoint(writer.checkpoint_dir("s", fetch=False), run=1)
    (local / LINEAGE_FILE).write_text(json.dumps({"checkpoint_version": "abc"}))
    writer.publish_checkpoint("s")
    assert json.loads((reader.checkpoint_dir("s") / LINEAGE_FILE).read_text()) == {"checkpoint_version": "abc"}


@pytest.mark.parametrize("launcher", ["in_process", "torchrun"])
def test_student_checkpoint_publishes_its_lineage_inside_the_checkpoint(
    tmp_path, tiny_teacher, memory_root, monkeypatch, launcher
):
    """Both training paths (in the step, and torchrun through Dagster Pipes) write lineage.json before the swap."""
    monkeypatch.setenv("DISTILL_STORAGE_ROOT", memory_root)
    monkeypatch.setenv("DISTILL_LOCAL_ROOT", str(tmp_path / "trainer"))
    spec_path = pipes_spec(tmp_path, tiny_teacher, {"kind": launcher, "nproc_per_node": 1}, steps=2)
    defs = build_definitions(spec_path)
    with defs.resources["store"].frame_path("training_set").open("wb") as f:
        demo_training_set(16).write_parquet(f)  # the upstream asset, as the IO manager stores it
    assets = [a for a in defs.assets if dg.AssetKey("student_checkpoint") in getattr(a, "keys", ())]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*assets, dg.AssetSpec("training_set")], selection=[dg.AssetKey("student_checkpoint")],
            partition_key="student_m", resources=dict(defs.resources), instance=instance,
        )  # fmt: skip
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("student_checkpoint"))
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}

    reader = ArtifactStore(root=memory_root, local_root=str(tmp_path / "evaluator"))
    fetched = reader.checkpoint_dir("student_m")
    lineage = json.loads((fetched / LINEAGE_FILE).read_text())
    assert lineage["checkpoint_version"] == metadata["checkpoint_version"] == checkpoint_version(fetched)
    assert lineage["training_set_version"] == metadata["training_set_version"]
    assert lineage["teacher_versions"] == {"teacher_b": ["v"]}
    assert event.asset_materialization.tags["dagster/data_version"] == lineage["checkpoint_version"]
    assert metadata["stored_at"].startswith(f"{memory_root}/checkpoints/student_m/")
    assert metadata["final_loss"] > 0
