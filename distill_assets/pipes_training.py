"""Student training launched as an external data-parallel job through Dagster Pipes.

`student_checkpoint` hands a student whose spec says `launcher: {kind: torchrun | accelerate}`
to `train_with_pipes`: the training set and the resolved spec go to a scratch folder, a
`PipesSubprocessClient` runs `torchrun` (or `accelerate launch`) over
`distill_assets.train_entrypoint`, and the metadata rank 0 reports (losses, time, world
size, checkpoint path) becomes the asset's materialization. Dagster schedules nothing
itself here: torch's launcher starts and watches the ranks.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.frames import write_parquet
from distill_assets.spec import LauncherSpec, Spec, StudentSpec


def write_spec_json(spec: Spec, path: Path) -> Path:
    """The spec with its base folder, so the child resolves relative paths as the parent does."""
    path.write_text(json.dumps({"spec": spec.model_dump(mode="json"), "base_dir": str(spec.base_dir.resolve())}))
    return path


def launch_command(launcher: LauncherSpec, device: str, entrypoint_args: list[str]) -> list[str]:
    """The launcher's command line; the interpreter's own modules, so no PATH lookup of a script."""
    module = ["-m", "distill_assets.train_entrypoint", *entrypoint_args, "--device", device]
    n = str(launcher.nproc_per_node)
    if launcher.kind == "torchrun":
        # --standalone: a single-node rendezvous on a free local port.
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n,
                *launcher.extra_args, *module]  # fmt: skip
    if launcher.kind == "accelerate":
        # --multi_gpu is accelerate's torchrun-based multi-process launch, on CPUs too (gloo); its --cpu
        # flag means one process, or MPI.
        hardware = ["--multi_gpu"] if launcher.nproc_per_node > 1 else (["--cpu"] if device == "cpu" else [])
        return [sys.executable, "-m", "accelerate.commands.launch", *hardware, "--num_processes", n,
                "--num_machines", "1", "--mixed_precision", "no", *launcher.extra_args, *module]  # fmt: skip
    raise ValueError(f"launcher.kind: {launcher.kind!r} does not run through Pipes")


def train_with_pipes(
    context: dg.AssetExecutionContext,
    student: StudentSpec,
    spec: Spec,
    training_set: pl.DataFrame | pl.LazyFrame,
    out_dir: Path,
    device: str,
    client: dg.PipesSubprocessClient | None = None,
    base_dir: Path | None = None,
) -> dg.MaterializeResult:
    """Run the student's launcher over the entrypoint; the child's report is the materialization.

    `base_dir` is a staged student's starting checkpoint (that of the student it builds on)."""
    with tempfile.TemporaryDirectory(prefix=f"distill-{student.name}-") as scratch:
        scratch_dir = Path(scratch)
        frame_path = scratch_dir / "training_set.parquet"
        write_parquet(training_set, str(frame_path))
        spec_path = write_spec_json(spec, scratch_dir / "spec.json")
        command = launch_command(
            student.launcher,
            device,
            ["--spec", str(spec_path), "--student", student.name, "--training-set", str(frame_path),
             "--out-dir", str(out_dir), *(["--base-dir", str(base_dir)] if base_dir else [])],
        )  # fmt: skip
        context.log.info(f"launching: {' '.join(command)}")
        client = client or dg.PipesSubprocessClient()
        # The rendezvous is on loopback: keep it off any HTTP proxy the environment names.
        invocation = client.run(command=command, context=context, env={"NO_PROXY": "127.0.0.1,localhost"})
        result = invocation.get_materialize_result()
    return result
