"""One teacher x task of generation as an external process: what PipesK8sClient runs in its pod.

    python -m distill_assets.generate_entrypoint --teacher teacher_a --task dates --out s3://.../x.parquet

It loads the spec ($DISTILL_SPEC), reads the task's curated inputs from the artifact store,
generates through the generation cache exactly as the in-process asset does, writes the
frame to --out and reports the figures to Dagster through Pipes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes
from upath import UPath

from distill_assets.generation import prompt_mode, summed, write_completions
from distill_assets.spec import default_spec_path, is_url, load_spec
from resources.accelerator import Accelerator
from resources.storage import ArtifactStore, read_frame
from resources.teachers import cached_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", required=True, help="where the completions go: a path or an object-store URL")
    args = parser.parse_args()

    spec = load_spec(default_spec_path())
    teacher, task = spec.teacher(args.teacher), spec.task(args.task)
    store = ArtifactStore(root=spec.storage_location(), local_root=str(spec.storage_path()))
    with open_dagster_pipes() as pipes:
        inputs = read_frame(store.frame_path("curated_inputs", task.name))
        pipes.log.info(f"{teacher.name} ({teacher.backend}) on {task.name}: {inputs.height} prompts")
        remote = is_url(args.out)
        written = store.path("staging", "pipes", Path(args.out).name) if remote else Path(args.out)
        chunk_stats: list[dict] = []  # the cached backend counts per call, and each chunk is one call
        with cached_teacher(teacher, spec, Accelerator(), store.generation_cache_path()) as backend:
            write_completions(
                backend, inputs, teacher, task, written, mode=prompt_mode(teacher, spec),
                on_chunk=lambda _: chunk_stats.append(backend.stats.metadata()),
            )  # fmt: skip
        if remote:
            with written.open("rb") as source, UPath(args.out).open("wb") as target:
                shutil.copyfileobj(source, target)
        counts = pl.scan_parquet(written).select(pl.len(), pl.col("num_tokens").sum()).collect().row(0)
        pipes.report_asset_materialization(
            metadata={
                "teacher_version": teacher.version(),
                "backend": teacher.backend,
                "completions": counts[0],
                **summed(chunk_stats),
                "generated_tokens": int(counts[1] or 0),
                "generated_in": "pipes",
            }
        )
        if remote:
            written.unlink()


if __name__ == "__main__":
    main()
