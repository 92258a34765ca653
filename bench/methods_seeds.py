"""The training methods side by side over several seeds: is one method's lead real or one seed's luck?

    python -m bench.methods_seeds                                # the demo spec's student_s trio, seeds 0-2
    python -m bench.methods_seeds --students student_s student_s_logits --seeds 0 1 2 3 --workers 2
    python -m bench.methods_seeds --device cuda --workers 8      # on a GPU machine (bf16 where supported)

Builds the training set as the pipeline does, with plain functions and no Dagster run:
each teacher is scored on every task's dev split, `routing: auto` picks the best one per
task (or the spec's fixed routing), the routed teachers generate, curation and the
cross-task dedup run, and the routed rows are merged. Then each (student, seed) trains in a
process of its own, `--workers` at a time, and is scored on every task's eval prompts.
Prints the generation throughput, then per student: method, exact match per task as the
mean and range over seeds, training seconds and peak memory (GPU memory on CUDA, the
process's resident-memory increase on CPU).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from bench.common import routed_data
from distill_assets.curation import dedup_across, kept
from distill_assets.evaluation import score_predictions, task_scores
from distill_assets.routing import Routing
from distill_assets.spec import default_spec_path, load_spec
from distill_assets.training_set import merge_routed
from resources.devices import default_dtype
from resources.transformers_backend import TransformersBackend


def build_data(spec, device: torch.device) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], Routing]:
    """(training set, eval set per task, routing): the routed, curated completions merged and deduplicated."""
    curated, evals, routing = routed_data(spec, device)
    merged = merge_routed({key: kept(frame) for key, frame in curated.items()}, spec, routing)
    return dedup_across(merged, spec.quality)[0].collect(), evals, routing  # lazy: the pipeline's frames stream


def train_and_score(job: dict) -> dict:
    """One (student, seed): train on the saved training set, score on every task's eval set."""
    import datasets
    import transformers

    from distill_assets.training import train_student

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(job["threads"])
    spec = load_spec(Path(job["spec"]))
    student = spec.student(job["student"])
    training = student.training.model_copy(update={"seed": job["seed"], **job["overrides"]})
    student = student.model_copy(update={"training": training})
    device = torch.device(job["device"])
    data = Path(job["data"])
    training_set = pl.read_parquet(data / "training_set.parquet")
    with tempfile.TemporaryDirectory() as out:
        metrics = train_student(student, spec, training_set, Path(out) / "ckpt", device, log=lambda _: None)
        backend = TransformersBackend.load(str(Path(out) / "ckpt"), device, default_dtype(device), 200)
        try:
            predictions = pl.concat(
                [
                    score_predictions(
                        backend, pl.read_parquet(path), spec.task(path.stem), spec.evaluation, student.name, "x"
                    )
                    for path in sorted((data / "eval").glob("*.parquet"))
                ]
            )
        finally:
            backend.close()
    scores = {row["task"]: row["score"] for row in task_scores(predictions).iter_rows(named=True)}
    result = {
        "student": student.name,
        "method": student.method,
        "seed": job["seed"],
        "scores": scores,
        "train_seconds": metrics["train_seconds"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "final_loss": metrics["final_loss"],
    }
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict], tasks: list[str]) -> str:
    head = ["student", "method", "seeds", *tasks, "mean", "train s", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["student"] for r in results):
        rows = [r for r in results if r["student"] == name]
        cells = [name, rows[0]["method"], str(len(rows))]
        for task in [*tasks, "mean"]:
            values = [
                statistics.mean(r["scores"].values()) if task == "mean" else r["scores"].get(task, 0.0) for r in rows
            ]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        cells.append(f"{statistics.mean(r['train_seconds'] for r in rows):.1f}")
        cells.append(f"{statistics.mean(r['peak_memory_mb'] for r in rows):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=default_spec_path())
    parser.add_argument("--students", nargs="+", help="default: every student of the size of the spec's last one")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, help="override the students' training steps")
    parser.add_argument("--workers", type=int, default=1, help="students trained at once, each in its own process")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, help="keep the built training set here (reused when present)")
    parser.add_argument("--json", type=Path, help="also write every result here")
    args = parser.parse_args()

    spec = load_spec(args.spec)
    device = torch.device(args.device)
    if args.students is None:
        size = spec.students[-1].base.architecture
        args.students = [s.name for s in spec.students if s.base.architecture == size]
    data = args.data or Path(tempfile.mkdtemp(prefix="methods_seeds_"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device: {device} ({name}), torch {torch.__version__}", flush=True)
    if not (data / "training_set.parquet").exists():
        started = time.perf_counter()
        training_set, evals, routing = build_data(spec, device)
        (data / "eval").mkdir(parents=True, exist_ok=True)
        for task, frame in evals.items():
            frame.write_parquet(data / "eval" / f"{task}.parquet")
        training_set.write_parquet(data / "training_set.parquet")
        print(
            f"training set: {training_set.height} rows, routing {routing.describe()}, "
            f"{time.perf_counter() - started:.0f}s"
        )
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    jobs = [
        {"spec": str(args.spec.resolve()), "student": s, "seed": seed, "device": args.device, "data": str(data),
         "overrides": overrides, "threads": threads}
        for seed in args.seeds
        for s in args.students
    ]  # fmt: skip
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(train_and_score, jobs, chunksize=1)
    print(f"\n{len(jobs)} students trained and scored in {time.perf_counter() - started:.0f}s, {args.workers} at once")
    steps = args.max_steps or {spec.student(s).training.max_steps for s in args.students}
    print(f"exact match, mean (range) over seeds {args.seeds}; steps {steps}; device {device} ({name})\n")
    print(table(results, [t.name for t in spec.tasks]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
