"""A checkpoint on an object store: published atomically, fetched whole.

Under a student's prefix (`<root>/checkpoints/<student>/`):

    <version>/...            the checkpoint's files, uploaded first
    <version>/manifest.json  written last: the version and each file's path, size and sha256
    current                  written after the manifest: {"version": ..., "previous": ...}

`<version>` is a hash of the manifest's file list, so a checkpoint's content names its prefix.
A reader follows `current` and trusts a version only when its manifest is there and every file
it lists is present with its size; what it downloads is checked against the sha256s. A publish
killed half way leaves `current` on the previous version, so readers keep getting that one.
The previous version is kept when a new one goes live (a reader may still be fetching it); older
ones are deleted. One writer per student at a time, as one run trains a student.

Fetching goes to a temporary folder beside the local checkpoint, renamed into place once every
file is there and checked, so the final path never holds a half-fetched checkpoint. A copy of
the manifest inside the local checkpoint says which version it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from upath import UPath

from distill_assets.versions import MANIFEST_FILE

POINTER = "current"


class IncompleteCheckpoint(RuntimeError):
    """A version whose manifest names a file the store lacks, or whose bytes differ from the manifest."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(local: Path) -> dict:
    """Each file of a local checkpoint (its manifest copy left out) with size and sha256, and the version they make."""
    if not local.is_dir():
        raise FileNotFoundError(f"{local}: no checkpoint folder to publish")
    files = [
        {"path": p.relative_to(local).as_posix(), "size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(local.rglob("*"))
        if p.is_file() and p.relative_to(local).as_posix() != MANIFEST_FILE
    ]
    if not files:
        raise FileNotFoundError(f"{local}: the checkpoint folder is empty")
    version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    return {"version": version, "files": files}


def _read_json(remote: UPath, name: str) -> dict | None:
    try:
        return json.loads(remote.fs.cat_file(f"{remote.path}/{name}"))
    except FileNotFoundError:
        return None


def _write_whole(remote: UPath, name: str, payload: dict) -> None:
    """Write a small object through a temporary name and a move: never seen half-written, on a local store too."""
    tmp = f"{remote.path}/{name}.tmp-{uuid.uuid4().hex[:8]}"
    remote.fs.makedirs(remote.path, exist_ok=True)
    remote.fs.pipe_file(tmp, json.dumps(payload, indent=1).encode())
    remote.fs.mv(tmp, f"{remote.path}/{name}")


def missing_files(version_dir: UPath, manifest: dict) -> list[str]:
    """The manifest's files that the store lacks or holds at another size (empty: the version is complete)."""
    prefix = version_dir.path.rstrip("/")
    try:
        found = version_dir.fs.find(prefix, detail=True)
    except FileNotFoundError:
        found = {}
    sizes = {name.rstrip("/")[len(prefix) + 1 :]: info.get("size") for name, info in found.items()}
    return [f["path"] for f in manifest["files"] if sizes.get(f["path"]) != f["size"]]


def is_complete(version_dir: UPath, manifest: dict) -> bool:
    """The version's stored manifest is this one and every file it lists is there at its size."""
    return _read_json(version_dir, MANIFEST_FILE) == manifest and not missing_files(version_dir, manifest)


def publish(local: Path, remote: UPath) -> UPath:
    """Upload a local checkpoint to `remote/<version>/`, manifest last, then point `current` at it.

    Returns the version's URL. A version already complete in the store (the same content
    published before) is not uploaded again.
    """
    manifest = build_manifest(local)
    version_dir = remote / manifest["version"]
    if not is_complete(version_dir, manifest):
        for entry in manifest["files"]:
            target = f"{version_dir.path}/{entry['path']}"
            version_dir.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            version_dir.fs.put_file(str(local / entry["path"]), target)
        _write_whole(version_dir, MANIFEST_FILE, manifest)
        if missing := missing_files(version_dir, manifest):  # another writer pruned it under us
            raise IncompleteCheckpoint(f"{version_dir}: {len(missing)} file(s) gone after upload: {missing[:3]}")
    pointer = _read_json(remote, POINTER) or {}
    previous = pointer.get("version") if pointer.get("version") != manifest["version"] else pointer.get("previous")
    _write_whole(remote, POINTER, {"version": manifest["version"], "previous": previous})
    _prune(remote, keep={manifest["version"], previous})
    (local / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))  # the local copy is this version
    return version_dir


def _prune(remote: UPath, keep: set[str | None]) -> None:
    """Delete every version folder but the ones kept (the current and the previous)."""
    for info in remote.fs.ls(remote.path, detail=True):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info["type"] == "directory" and name not in keep:
            remote.fs.rm(info["name"], recursive=True)


def current_manifest(remote: UPath) -> dict | None:
    """The manifest `current` points at, checked complete; None when nothing was published."""
    pointer = _read_json(remote, POINTER)
    if pointer is None:
        return None
    version_dir = remote / pointer["version"]
    manifest = _read_json(version_dir, MANIFEST_FILE)
    if manifest is None or manifest.get("version") != pointer["version"]:
        raise IncompleteCheckpoint(f"{version_dir}: `current` names this version but its {MANIFEST_FILE} is missing")
    if missing := missing_files(version_dir, manifest):
        raise IncompleteCheckpoint(f"{version_dir}: {len(missing)} file(s) of its manifest missing: {missing[:3]}")
    return manifest


def local_manifest(local: Path) -> dict | None:
    path = local / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def fetch(remote: UPath, local: Path) -> bool:
    """Bring the store's current version to `local` unless it is there already; True when it fetched.

    Nothing published leaves `local` as it is.
    """
    manifest = current_manifest(remote)
    if manifest is None or local_manifest(local) == manifest:
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    with _fetch_lock(local):
        if local_manifest(local) == manifest:  # another process on this machine fetched it meanwhile
            return False
        _clear_leftovers(local)
        staging = local.with_name(f".{local.name}.fetch-{uuid.uuid4().hex[:8]}")
        try:
            _download(remote / manifest["version"], manifest, staging)
            _swap_in(staging, local)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return True


def _download(version_dir: UPath, manifest: dict, staging: Path) -> None:
    """Every file of the manifest into `staging`, each checked against its size and sha256, the manifest last."""
    for entry in manifest["files"]:
        target = staging / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        version_dir.fs.get_file(f"{version_dir.path}/{entry['path']}", str(target))
        if target.stat().st_size != entry["size"] or file_sha256(target) != entry["sha256"]:
            raise IncompleteCheckpoint(f"{version_dir}/{entry['path']}: its bytes differ from the manifest's")
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def _swap_in(staging: Path, local: Path) -> None:
    """Rename the fetched folder into place; the old one is moved aside first and then deleted."""
    old = local.with_name(f".{local.name}.old-{uuid.uuid4().hex[:8]}")
    if local.exists():
        local.rename(old)
    staging.rename(local)
    shutil.rmtree(old, ignore_errors=True)


def _clear_leftovers(local: Path) -> None:
    """Folders an earlier fetch killed half way left beside the checkpoint (called under the lock)."""
    for pattern in (f".{local.name}.fetch-*", f".{local.name}.old-*"):
        for leftover in local.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _fetch_lock(local: Path) -> Iterator[None]:
    """One fetch of a checkpoint at a time on this machine (steps of one run may ask for it together)."""
    with (local.parent / f".{local.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
