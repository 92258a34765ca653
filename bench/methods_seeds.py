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

A staged student (`base: {student: ...}`) trains its stages one after another in its job, with
the job's seed, each from the one before; its steps, seconds and memory are the whole chain's,
and a second table shows each stage's score and the last stage's gain. `--max-steps N` is each
student's total: a staged student's stages share it in the proportions of their spec steps.
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


def stage_steps(spec, name: str, total: int | None) -> dict[str, int]:
    """Each stage's training steps (one stage unless staged): the spec's, or scaled so they add up to `total`."""
    stages = {s.name: s.training.max_steps for s in spec.stages(name)}
    if total is None:
        return stages
    scale = total / sum(stages.values())
    out = {n: max(1, round(steps * scale)) for n, steps in list(stages.items())[:-1]}
    return out | {name: max(1, total - sum(out.values()))}


def train_and_score(job: dict) -> dict:
    """One (student, seed): train its stages on the saved training set, each scored on every task's eval set."""
    import datasets
    import transformers

    from distill_assets.training import train_student

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(job["threads"])
    spec = load_spec(Path(job["spec"]))
    device = torch.device(job["device"])
    data = Path(job["data"])
    training_set = pl.read_parquet(data / "training_set.parquet")
    stages, base_dir = [], None
    with tempfile.TemporaryDirectory() as out:
        for name, steps in job["steps"].items():  # first stage first
            student = spec.student(name)
            training = student.training.model_copy(update={"seed": job["seed"], "max_steps": steps})
            student = student.model_copy(update={"training": training})
            checkpoint = Path(out) / name
            metrics = train_student(
                student, spec, training_set, checkpoint, device, log=lambda _: None, base_dir=base_dir
            )
            stages.append({"student": name, "method": student.method, "steps": steps, "metrics": metrics,
                           "scores": _scores(spec, checkpoint, data, device, name)})  # fmt: skip
            base_dir = checkpoint
    last = stages[-1]
    result = {
        "student": job["student"],
        "method": " -> ".join(s["method"] for s in stages),
        "seed": job["seed"],
        "steps": "+".join(str(s["steps"]) for s in stages),
        "scores": last["scores"],
        "train_seconds": sum(s["metrics"]["train_seconds"] for s in stages),
        "peak_memory_mb": max(s["metrics"]["peak_memory_mb"] for s in stages),
        "final_loss": last["metrics"]["final_loss"],
        "stages": [{"student": s["student"], "steps": s["steps"], "scores": s["scores"]} for s in stages],
    }
    print(json.dumps(result), flush=True)
    return result


def _scores(spec, checkpoint: Path, data: Path, device: torch.device, name: str) -> dict[str, float]:
    """Exact match per task of a trained checkpoint on the saved eval sets."""
    backend = TransformersBackend.load(str(checkpoint), device, default_dtype(device), 200)
    try:
        predictions = pl.concat(
            [
                score_predictions(backend, pl.read_parquet(path), spec.task(path.stem), spec.evaluation, name, "x")
                for path in sorted((data / "eval").glob("*.parquet"))
            ]
        )
    finally:
        backend.close()
    return {row["task"]: row["score"] for row in task_scores(predictions).iter_rows(named=True)}


def _spread(values: list[float], sign: str = "") -> str:
    """Mean (range) over seeds."""
    sep = " to " if sign else "-"  # a signed range reads badly with a dash
    return f"{statistics.mean(values):{sign}.3f} ({min(values):{sign}.3f}{sep}{max(values):{sign}.3f})"


def _per_task(scores: list[dict[str, float]], tasks: list[str]) -> list[list[float]]:
    """Per task, then the mean over tasks: each seed's score."""
    return [[s.get(task, 0.0) for s in scores] for task in tasks] + [[statistics.mean(s.values()) for s in scores]]


def table(results: list[dict], tasks: list[str]) -> str:
    head = ["student", "method", "steps", "seeds", *tasks, "mean", "train s", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["student"] for r in results):
        rows = [r for r in results if r["student"] == name]
        cells = [name, rows[0]["method"], rows[0]["steps"], str(len(rows))]
        cells += [_spread(values) for values in _per_task([r["scores"] for r in rows], tasks)]
        cells.append(f"{statistics.mean(r['train_seconds'] for r in rows):.1f}")
        cells.append(f"{statistics.mean(r['peak_memory_mb'] for r in rows):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stages_table(results: list[dict], tasks: list[str]) -> str:
    """Staged students: each stage's exact match, mean (range) over seeds, and the last stage's gain seed by seed."""
    head = ["student", "stage", "steps", *tasks, "mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["student"] for r in results if len(r["stages"]) > 1):
        rows = [r for r in results if r["student"] == name]
        per_stage = [[r["stages"][i] for r in rows] for i in range(len(rows[0]["stages"]))]
        for stage in per_stage:
            cells = [name, stage[0]["student"], str(stage[0]["steps"])]
            cells += [_spread(v) for v in _per_task([s["scores"] for s in stage], tasks)]
            lines.append("| " + " | ".join(cells) + " |")
        gains = [
            [last - before for last, before in zip(a, b, strict=True)]
            for a, b in zip(_per_task([s["scores"] for s in per_stage[-1]], tasks),
                            _per_task([s["scores"] for s in per_stage[-2]], tasks), strict=True)
        ]  # fmt: skip
        lines.append("| " + " | ".join([name, "gain of the last stage", "", *(_spread(g, "+") for g in gains)]) + " |")
    return "\n".join(lines)


def print_tables(results: list[dict], tasks: list[str]) -> None:
    print(table(results, tasks))
    if any(len(r["stages"]) > 1 for r in results):
        print("\nstaged students, each stage after training:\n")
        print(stages_table(results, tasks))


def read_results(paths: list[Path]) -> list[dict]:
    """The result lines (one JSON object per trained student and seed) of earlier runs' logs, by student and seed."""
    results = [
        json.loads(line) for path in paths for line in path.read_text().splitlines() if line.startswith('{"student"')
    ]
    return sorted(results, key=lambda r: r["seed"])


def default_students(spec) -> list[str]:
    """The students of the last one's size (a staged student has its first stage's), but those that are only
    a stage of another listed one: they train, and are scored, as its first stage."""
    size = spec.stages(spec.students[-1].name)[0].base.architecture
    same = [s.name for s in spec.students if spec.stages(s.name)[0].base.architecture == size]
    bases = {s.name for n in same for s in spec.stages(n)[:-1]}
    return [n for n in same if n not in bases]


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
    parser.add_argument(
        "--results", type=Path, nargs="+", help="train nothing: print the tables of results earlier runs printed (logs)"
    )
    args = parser.parse_args()

    spec = load_spec(args.spec)
    if args.results:
        print_tables(read_results(args.results), [t.name for t in spec.tasks])
        return
    device = torch.device(args.device)
    args.students = args.students or default_students(spec)
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
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    jobs = [
        {"spec": str(args.spec.resolve()), "student": s, "seed": seed, "device": args.device, "data": str(data),
         "steps": stage_steps(spec, s, args.max_steps), "threads": threads}
        for seed in args.seeds
        for s in args.students
    ]  # fmt: skip
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(train_and_score, jobs, chunksize=1)
    print(f"\n{len(jobs)} students trained and scored in {time.perf_counter() - started:.0f}s, {args.workers} at once")
    print(f"exact match, mean (range) over seeds {args.seeds}; device {device} ({name})\n")
    print_tables(results, [t.name for t in spec.tasks])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
