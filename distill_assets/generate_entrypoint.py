"""One teacher x task of generation as an external process: what PipesK8sClient runs in its pod.

    python -m distill_assets.generate_entrypoint --teacher teacher_a --task dates --out s3://.../x.parquet

It loads the spec ($DISTILL_SPEC), reads the task's curated inputs from the artifact store,
generates through the generation cache exactly as the in-process asset does, writes the
frame to --out and reports the figures to Dagster through Pipes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dagster_pipes import open_dagster_pipes
from upath import UPath

from distill_assets.generation import generate_completions, prompt_mode
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
        with cached_teacher(teacher, spec, Accelerator(), store.generation_cache_path()) as backend:
            frame = generate_completions(backend, inputs, teacher, task, mode=prompt_mode(teacher, spec))
        out = UPath(args.out) if is_url(args.out) else Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            frame.write_parquet(f)
        pipes.report_asset_materialization(
            metadata={
                "teacher_version": teacher.version(),
                "backend": teacher.backend,
                "completions": frame.height,
                **backend.stats.metadata(),
                "generated_tokens": int(frame["num_tokens"].sum()),
                "generated_in": "pipes",
            }
        )


if __name__ == "__main__":
    main()
