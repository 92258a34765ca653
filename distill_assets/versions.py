"""Versions: short content hashes that name what a teacher, a frame or a checkpoint is.

They become Dagster data versions, so staleness follows the content: a teacher whose
spec changed makes its partitions stale, and a rerun that produces the same frame
leaves everything downstream fresh.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from distill_assets.frames import batches
from distill_assets.generation import checkpoint_fingerprint, teacher_identity
from distill_assets.spec import Spec, TeacherSpec


def _short(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def teacher_data_version(teacher: TeacherSpec, spec: Spec) -> str:
    """The teacher's spec version, plus its checkpoint's files when the model is a local directory.

    The spec version (`TeacherSpec.version()`, the training set's `teacher_version` column)
    covers backend, model, revision, prompt template and sampling; the files fingerprint
    catches a checkpoint retrained in place, the same way the generation cache does.
    """
    return _short(f"{teacher.version()}|{teacher_identity(teacher, spec)}".encode())


def teacher_versions(spec: Spec) -> dict[str, str]:
    """teacher name -> data version, for every teacher in the spec."""
    return {t.name: teacher_data_version(t, spec) for t in spec.teachers}


def _files(spec: Spec, *paths: str | None) -> list:
    """Name, size and modification time of local files or directories a spec names (an edit changes them)."""
    out = []
    for path in paths:
        resolved = Path(spec.resolve(path)) if path else None
        if resolved is not None and resolved.is_dir():
            out.append(checkpoint_fingerprint(resolved))
        elif resolved is not None and resolved.is_file():
            out.append([resolved.stat().st_size, resolved.stat().st_mtime_ns])
    return out


def _block(model, *files, exclude: set[str] | None = None) -> str:
    return _short(json.dumps([model.model_dump(mode="json", exclude=exclude), *files], sort_keys=True).encode())


def task_versions(spec: Spec) -> dict[str, str]:
    """task name -> a hash of its spec block, its quality bounds and its input files.

    The task's metrics are left out: they score evaluations only, so `evaluation_version` holds them.
    """
    versions = {}
    for t in spec.tasks:
        files = _files(spec, t.source, t.eval_source)
        versions[t.name] = _block(t, spec.quality_for(t.name).model_dump(mode="json"), files, exclude={"metrics"})
    return versions


def student_versions(spec: Spec) -> dict[str, str]:
    """student name -> a hash of its spec block (base, method, training, LoRA) and a local base model's files."""
    return {s.name: _block(s, _files(spec, s.base.model, s.base.tokenizer)) for s in spec.students}


def evaluation_version(spec: Spec) -> str:
    """A hash of the evaluation settings (max_new_tokens, batch sizes, timed requests, price) and of the tasks'
    metrics where a task does not keep the default (exact_match), with the version of each judging teacher."""
    metrics = {
        t.name: [
            [m.model_dump(mode="json") for m in t.metrics],
            [spec.teacher(m.settings.teacher).version() for m in t.metrics if m.name == "judge"],
        ]
        for t in spec.tasks
        if [m.model_dump(mode="json") for m in t.metrics] != ["exact_match"]
    }
    return _block(spec.evaluation, *([metrics] if metrics else []))


def frame_version(frame: pl.DataFrame | pl.LazyFrame, rows: int | None = None) -> str:
    """A hash of a frame's schema and rows, in order; equal frames give equal versions.

    Streamed: every column is split into flat streams (which values are null, list lengths,
    string bytes, the values of each nesting level), each hashed on its own as the chunks
    come, so a lazy frame is never held whole and the version does not depend on where the
    chunks break. Not `hash_rows`, whose values are not stable across polars versions.
    """
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    streams: dict = {}  # stream name -> its sha256
    for chunk in batches(frame, rows):
        for name in schema:
            _hash_values(streams, name, chunk.get_column(name))
    digest = hashlib.sha256(json.dumps([[n, str(t)] for n, t in schema.items()]).encode())
    for key in sorted(streams):
        digest.update(key.encode() + b"\0" + streams[key].digest())
    return digest.hexdigest()[:16]


def _hash_values(streams: dict, key: str, series: pl.Series) -> None:
    """Feed a column's values to its streams: which are null, then the values, nested ones level by level."""

    def feed(kind: str, data: bytes) -> None:
        streams.setdefault(f"{key}/{kind}", hashlib.sha256()).update(data)

    feed("null", series.is_null().to_numpy().tobytes())
    dtype = series.dtype
    if isinstance(dtype, pl.Categorical | pl.Enum):
        series, dtype = series.cast(pl.String), pl.String
    if isinstance(dtype, pl.List | pl.Array):
        feed("len", series.list.len().fill_null(0).cast(pl.Int64).to_numpy().tobytes())
        _hash_values(streams, f"{key}/[]", series.explode(empty_as_null=False, keep_nulls=False))
    elif isinstance(dtype, pl.Struct):
        for field in series.struct.unnest().iter_columns():
            _hash_values(streams, f"{key}/.{field.name}", field)
    elif dtype == pl.String:
        feed("len", series.str.len_bytes().fill_null(0).cast(pl.Int64).to_numpy().tobytes())
        feed("bytes", (series.str.join("").item() or "").encode())
    elif dtype == pl.Binary:
        feed("len", series.bin.size().fill_null(0).cast(pl.Int64).to_numpy().tobytes())
        feed("bytes", b"".join(v for v in series if v is not None))
    elif dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean:
        feed("values", series.to_physical().fill_null(False if dtype == pl.Boolean else 0).to_numpy().tobytes())
    elif dtype != pl.Null:
        raise TypeError(f"frame_version: column {series.name!r} has type {dtype}, which has no stable hash here")


# Files that describe a checkpoint rather than make it up: its lineage (what it was trained on) and,
# once published to an object store, the manifest it was published with. A checkpoint's version
# leaves them out, so writing them does not change it.
LINEAGE_FILE = "lineage.json"
MANIFEST_FILE = "manifest.json"
RECORD_FILES = frozenset({LINEAGE_FILE, MANIFEST_FILE})


def checkpoint_version(path: Path) -> str:
    """A hash of a checkpoint directory's file names and contents (its record files left out)."""
    digest = hashlib.sha256()
    files = (p for p in Path(path).rglob("*") if p.is_file() and str(p.relative_to(path)) not in RECORD_FILES)
    for file in sorted(files):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def write_lineage(checkpoint_dir: Path, lineage: dict) -> Path:
    """The lineage file inside the checkpoint: it travels (and is published) with it."""
    path = Path(checkpoint_dir) / LINEAGE_FILE
    path.write_text(json.dumps(lineage, indent=2) + "\n")
    return path


def read_lineage(checkpoint_dir: Path) -> dict | None:
    path = Path(checkpoint_dir) / LINEAGE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def lineage_markdown(lineage: dict | None) -> list[str]:
    """The report's lineage section: which checkpoints it evaluated, trained on which training set."""
    if not lineage:
        return []
    lines = [
        "",
        "## Lineage",
        "",
        f"Training set version: `{lineage['training_set_version']}`",
        "",
        "| student | checkpoint version | trained on training set | current |",
        "|---|---|---|---|",
    ]
    for name, c in lineage["checkpoints"].items():
        current = "yes" if c.get("training_set_version") == lineage["training_set_version"] else "**no (stale)**"
        lines.append(f"| {name} | `{c.get('checkpoint_version')}` | `{c.get('training_set_version')}` | {current} |")
    teachers = lineage.get("teachers") or {}
    if teachers:
        listed = ", ".join(f"{t} `{'`, `'.join(v)}`" for t, v in teachers.items())
        lines += ["", f"Teacher versions in the training set: {listed}"]
    return lines


def teacher_versions_in(frame: pl.DataFrame | pl.LazyFrame) -> dict[str, list[str]]:
    """teacher -> the teacher versions its rows in a training set came from."""
    pairs = frame.lazy().select("teacher", "teacher_version").unique().sort("teacher", "teacher_version").collect()
    out: dict[str, list[str]] = {}
    for teacher, version in pairs.iter_rows():
        out.setdefault(teacher, []).append(version)
    return out


def checkpoint_lineage(student: str, checkpoint_dir: Path, training_set: pl.DataFrame | pl.LazyFrame) -> dict:
    """What a freshly trained checkpoint is and what it was trained on; written inside it."""
    lineage = {
        "student": student,
        "checkpoint_version": checkpoint_version(checkpoint_dir),
        "training_set_version": frame_version(training_set),
        "teacher_versions": teacher_versions_in(training_set),
    }
    write_lineage(checkpoint_dir, lineage)
    return lineage


def report_lineage(checkpoints: dict[str, Path], training_set: pl.DataFrame | pl.LazyFrame) -> dict:
    """The checkpoint versions a report evaluated (student -> checkpoint folder) and what each was trained on."""
    return {
        "training_set_version": frame_version(training_set),
        "teachers": teacher_versions_in(training_set),
        "checkpoints": {s: read_lineage(checkpoints[s]) or {} for s in sorted(checkpoints)},
    }
