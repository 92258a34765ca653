"""Does curation help? Degrade one teacher, then train the same student with and without curation.

    python -m bench.curation_effect                                   # teacher_a at temperature 1.5
    python -m bench.curation_effect --teacher teacher_a --temperature 1.5 --student student_s --max-steps 600

Routes each task as the pipeline does (with `routing: auto`, the best teacher on the dev
split), generates its completions with the routed teacher (the degraded one sampling at
`--temperature`, the others as the spec says), curates them with the spec's rules, trains
`--student` twice from the same seed (on every completion, and on the curated ones), and
prints per task: generated, dropped by curation (by rule), and the student's exact match
on the eval prompts with and without curation. Plain functions, no Dagster run
(bench/common.py: routed_data); needs the demo teachers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import datasets
import polars as pl
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also run as `python bench/curation_effect.py`

from bench.common import routed_data
from distill_assets.curation import dedup_across, kept, summary
from distill_assets.evaluation import score_predictions, task_scores
from distill_assets.spec import default_spec_path, load_spec
from distill_assets.training import train_student
from distill_assets.training_set import merge_routed
from resources.transformers_backend import TransformersBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=default_spec_path())
    parser.add_argument("--teacher", default="teacher_a", help="the teacher to degrade")
    parser.add_argument("--temperature", type=float, default=1.5, help="the degraded teacher's sampling temperature")
    parser.add_argument("--student", default="student_s")
    parser.add_argument("--max-steps", type=int, default=None, help="override the student's training steps")
    parser.add_argument("--train-prompts", type=int, default=None, help="use only this many prompts per task")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

    spec = load_spec(args.spec)
    device, dtype = torch.device("cpu"), torch.float32
    student = spec.student(args.student)
    if args.max_steps:
        training = student.training.model_copy(update={"max_steps": args.max_steps})
        student = student.model_copy(update={"training": training})
    started = time.time()
    curated, evals, routing = routed_data(spec, device, {args.teacher: args.temperature}, args.train_prompts)
    print(f"routing {routing.describe()}; generated and curated in {time.time() - started:.0f}s", flush=True)
    raw = {key: frame.with_columns(dropped_by=pl.lit(None, pl.String)) for key, frame in curated.items()}

    arms = {
        "without curation": merge_routed(raw, spec, routing).collect(),  # lazy: the pipeline's frames stream
        "with curation": dedup_across(
            merge_routed({k: kept(f) for k, f in curated.items()}, spec, routing), spec.quality
        )[0].collect(),
    }
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm, training_set in arms.items():
            if training_set.height == 0:
                print(f"{arm}: no training rows left; the student is not trained", flush=True)
                scores[arm] = {}
                continue
            started = time.time()
            out_dir = Path(tmp) / arm.replace(" ", "_")
            metrics = train_student(student, spec, training_set, out_dir, device, log=lambda _: None)
            backend = TransformersBackend.load(str(out_dir), device, dtype, spec.evaluation.batch_size)
            try:
                predictions = pl.concat(
                    [
                        score_predictions(backend, evals[t], spec.task(t), spec.evaluation, student.name, arm)
                        for t in sorted(evals)
                    ]
                )
            finally:
                backend.close()
            scores[arm] = {r["task"]: r["score"] for r in task_scores(predictions).iter_rows(named=True)}
            print(
                f"trained {student.name} {arm}: {training_set.height} rows, {metrics['steps']} steps, "
                f"final loss {metrics['final_loss']:.3f}, {time.time() - started:.0f}s",
                flush=True,
            )

    print(f"\n{args.teacher} degraded to temperature {args.temperature}; student {student.name}, "
          f"{student.training.max_steps} steps\n")  # fmt: skip
    head = ["task", "teacher", "generated", "kept", "dropped (by rule)", "EM without curation", "EM with curation"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for key, frame in sorted(curated.items()):
        task_name, teacher_name = key.split("|")
        stats = summary(frame)
        rules = ", ".join(f"{r} {n}" for r, n in stats["dropped"].items() if n) or "none"
        degraded = " (degraded)" if teacher_name == args.teacher else ""
        cells = [task_name, teacher_name + degraded, str(stats["generated"]), str(stats["kept"]), rules]
        cells += [f"{scores[arm].get(task_name, 0.0):.3f}" for arm in ("without curation", "with curation")]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
