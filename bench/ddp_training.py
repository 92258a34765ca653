"""Data-parallel student training: `torchrun` with 2 processes (gloo on CPU) against 1 process, same data and steps.

python -m bench.ddp_training [--steps 60] [--batch 32] [--rows 3000]

Both runs see the same examples per step: 1 process with batch B, 2 processes with B/2
each (DDP averages their gradients). Each is the entrypoint Dagster Pipes launches
(distill_assets/train_entrypoint.py), run here by hand. Wall time includes the launch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.tiny_models import build_tokenizer
from distill_assets.pipes_training import launch_command, write_spec_json
from distill_assets.spec import LauncherSpec, Spec

PROJECT_DIR = Path(__file__).resolve().parent.parent
TASKS = ("dates", "reverse", "units")


def demo_training_set(rows: int) -> pl.DataFrame:
    """The demo tasks' prompts with their reference answers as completions, interleaved, all from teacher_a."""
    per_task = rows // len(TASKS)
    records = []
    for task in TASKS:
        for line in (DATA_DIR / f"{task}_train.jsonl").read_text().splitlines()[:per_task]:
            row = json.loads(line)
            records.append(
                {"task": task, "teacher": "teacher_a", "teacher_version": "reference", "prompt": row["prompt"],
                 "completion": row["answer"]}
            )  # fmt: skip
    frame = pl.DataFrame(records).sample(fraction=1.0, shuffle=True, seed=0)
    return frame.with_columns(
        messages=pl.Series(
            [
                [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
                for p, c in frame.select("prompt", "completion").iter_rows()
            ]
        )
    )


def spec_for(batch: int, steps: int, tokenizer: str) -> Spec:
    student = {
        "name": "student_s",
        "base": {
            "architecture": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
            "tokenizer": tokenizer,
        },
        "training": {"max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 0.003,
                     "max_length": 64, "logging_steps": max(steps // 6, 1)},
    }  # fmt: skip
    return Spec.model_validate(
        {
            "tasks": [{"name": t, "source": f"distill_assets/demo/data/{t}_train.jsonl"} for t in TASKS],
            "teachers": [{"name": "teacher_a", "model": tokenizer, "tasks": list(TASKS)}],
            "students": [student],
            "base_dir": PROJECT_DIR,
        }
    )


def run(nproc: int, batch: int, steps: int, frame_path: Path, work: Path, threads: int | None = None) -> dict:
    spec_path = write_spec_json(spec_for(batch, steps, str(work / "tokenizer")), work / f"spec_{nproc}.json")
    out_dir = work / f"checkpoint_{nproc}"
    args = ["--spec", str(spec_path), "--student", "student_s", "--training-set", str(frame_path),
            "--out-dir", str(out_dir)]  # fmt: skip
    command = launch_command(LauncherSpec(kind="torchrun", nproc_per_node=nproc), "cpu", args)
    started = time.perf_counter()
    # torchrun gives each of several processes one thread; a single process keeps torch's default unless told.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{nproc} process(es) failed:\n{done.stderr[-3000:]}")
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    return {**metrics, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32, help="examples per step, split over the processes")
    parser.add_argument("--rows", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="distill-ddp-") as tmp:
        work = Path(tmp)
        frame_path = work / "training_set.parquet"
        demo_training_set(args.rows).write_parquet(frame_path)
        build_tokenizer().save_pretrained(work / "tokenizer")  # the demo teachers' character tokenizer
        one = run(1, args.batch, args.steps, frame_path, work)
        one_thread = run(1, args.batch, args.steps, frame_path, work, threads=1)
        two = run(2, args.batch // 2, args.steps, frame_path, work)
    print(f"student_s on {args.rows} demo examples, {args.steps} steps, {args.batch} examples per step, CPU")
    print(f"torch threads by default: {torch.get_num_threads()}")
    print("| processes x threads | backend | wall s | train s | first loss | final loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, m in (("1 x default", one), ("1 x 1", one_thread), ("2 x 1", two)):
        print(f"| {label} | {m['backend']} | {m['wall_s']:.1f} | {m['train_seconds']:.1f} | "
              f"{m['first_loss']:.4f} | {m['final_loss']:.4f} |")  # fmt: skip
    for label, base in (("1 x default", one), ("1 x 1", one_thread)):
        ratio, delta = two["wall_s"] / base["wall_s"], two["final_loss"] - base["final_loss"]
        print(f"2 x 1 against {label}: wall {ratio:.2f}x, final loss {delta:+.4f}")


if __name__ == "__main__":
    main()
