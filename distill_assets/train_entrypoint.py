"""Student training as an external process: what `torchrun` or `accelerate launch` runs, one copy per rank.

    torchrun --standalone --nproc_per_node 2 -m distill_assets.train_entrypoint \\
        --spec spec.json --student student_m --training-set training_set.parquet --out-dir checkpoints/student_m

Every rank runs the same `train_student` (TRL's trainer wraps the model in DDP under torchrun:
gloo on CPU, NCCL on GPUs). Rank 0 alone opens Dagster Pipes, when launched by Dagster, and
reports the metrics and the checkpoint path as the asset's materialization metadata; run by
hand, without Dagster, it prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

import torch

from distill_assets.frames import scan_parquet
from distill_assets.spec import Spec
from distill_assets.training import train_student


def load_spec_json(path: Path) -> Spec:
    """The spec as the parent process resolved it (written by pipes_training.write_spec_json)."""
    data = json.loads(path.read_text())
    return Spec.model_validate({**data["spec"], "base_dir": data["base_dir"]})


def _device(requested: str) -> torch.device:
    if requested == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def metadata(metrics: dict, out_dir: Path) -> dict:
    """What the asset records: the checkpoint path and the training figures."""
    return {
        "path": {"raw_value": str(out_dir), "type": "path"},
        **{k: metrics[k] for k in ("parameters", "first_loss", "final_loss", "train_seconds", "steps")},
        "world_size": metrics["world_size"],
        "backend": metrics["backend"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="the resolved spec, as JSON")
    parser.add_argument("--student", required=True)
    parser.add_argument("--training-set", type=Path, required=True, help="the training set, as parquet")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the checkpoint goes")
    parser.add_argument("--base-dir", type=Path, help="a staged student's starting checkpoint (its base student's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    rank = int(os.environ.get("RANK", "0"))
    spec = load_spec_json(args.spec)
    student = spec.student(args.student)
    frame = scan_parquet(args.training_set)  # the top-k columns are read in chunks, when the method needs them
    device = _device(args.device)

    pipes = None
    with contextlib.ExitStack() as stack:
        if rank == 0:
            from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

            if os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR):  # launched by Dagster, not by hand
                pipes = stack.enter_context(open_dagster_pipes())
        log = pipes.log.info if pipes else (print if rank == 0 else (lambda _line: None))
        metrics = train_student(student, spec, frame, args.out_dir, device, log, base_dir=args.base_dir)
        if rank != 0:
            return
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        metrics["world_size"] = torch.distributed.get_world_size() if distributed else 1
        metrics["backend"] = str(torch.distributed.get_backend()) if distributed else "none"
        if pipes:
            pipes.report_asset_materialization(metadata=metadata(metrics, args.out_dir))
        else:
            print(json.dumps({k: v for k, v in metrics.items() if k != "loss_history"}))


if __name__ == "__main__":
    main()
