"""The demo at a size that runs in minutes or seconds: fewer prompts, training steps and timed requests.

The benchmarks that run the whole graph and the tests share it. With the demo's trained
teachers it is the project's distill.yaml itself (routing, students, methods, checks) on
the first `train` and `eval_` prompts of each task. With a stand-in teacher (an untrained
checkpoint) it keeps the demo's shape, 2 teachers x 3 tasks with fixed routing and 2
students, at a size a random model passes: tiny students, 4 generated tokens, no verifier,
truncated completions kept.

    python -m distill_assets.demo.shrunken DIR [--train 300 --eval 50 --steps 100 --dev 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from distill_assets.demo import tasks
from distill_assets.demo.make_data import DATA_DIR

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
DEMO_SPEC = PROJECT_DIR / "distill.yaml"
TASKS = tuple(sorted(tasks.TASKS))


def shrunken_spec(
    root: Path, train: int, eval_: int, steps: int, teacher: Path | None = None, dev: int | None = None
) -> dict:
    """The spec (a dict to dump beside `root`) with its prompt files written under `root`/data.

    `train` and `eval_` are the prompts per task, `steps` each student's training steps, `dev`
    each task's dev split (the spec's default when None). `teacher` is a checkpoint standing
    in for both teachers; None takes the demo's own.
    """
    data = _demo_spec() if teacher is None else _stand_in_spec(Path(teacher))
    prompts = root / "data"
    prompts.mkdir(parents=True, exist_ok=True)
    for task in data["tasks"]:
        for field, split, count in (("source", "train", train), ("eval_source", "eval", eval_)):
            lines = (DATA_DIR / f"{task['name']}_{split}.jsonl").read_text().splitlines()[:count]
            (prompts / f"{task['name']}_{split}.jsonl").write_text("".join(line + "\n" for line in lines))
            task[field] = f"data/{task['name']}_{split}.jsonl"  # relative to the spec, written in `root`
        task["eval_size"] = eval_
        if dev is not None:
            task["dev_size"] = dev
    for student in data["students"]:
        student["training"] |= {"max_steps": steps, "logging_steps": max(steps // 4, 1)}
    data["storage_root"] = "artifacts"
    return data


def write_spec(root: Path, train: int, eval_: int, steps: int, teacher: Path | None = None, dev: int | None = None):
    """shrunken_spec written to `root`/distill.yaml; returns that path."""
    path = root / "distill.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(shrunken_spec(root, train, eval_, steps, teacher, dev), sort_keys=False))
    return path


def _demo_spec() -> dict:
    """distill.yaml with its checkpoints as absolute paths and evaluation's timed requests cut down."""
    data = json.loads(json.dumps(yaml.safe_load(DEMO_SPEC.read_text())))
    for teacher in data["teachers"]:
        teacher["model"] = str(PROJECT_DIR / teacher["model"])
    for student in data["students"]:
        if student["base"].get("tokenizer"):
            student["base"]["tokenizer"] = str(PROJECT_DIR / student["base"]["tokenizer"])
    data["evaluation"] |= {"latency_requests": 5, "throughput_prompts": 32, "batch_size": 64}
    return data


def _stand_in_spec(teacher: Path) -> dict:
    generation = {"max_new_tokens": 4, "batch_size": 8, "temperature": 1.0}
    training = {"per_device_train_batch_size": 4, "max_length": 64}

    def student(name: str, hidden: int) -> dict:
        arch = {"hidden_size": hidden, "num_hidden_layers": 1, "num_attention_heads": 2}
        return {"name": name, "base": {"architecture": arch, "tokenizer": str(teacher)}, "training": dict(training)}

    return {
        "tasks": [{"name": task} for task in TASKS],
        "teachers": [
            {"name": "teacher_a", "model": str(teacher), "tasks": ["dates", "units"], "generation": generation},
            {"name": "teacher_b", "model": str(teacher), "tasks": ["reverse"], "generation": dict(generation)},
        ],
        "students": [student("student_m", 16), student("student_s", 8)],
        # An untrained teacher always runs to max_new_tokens: keep its truncated completions.
        "quality": {"drop_truncated": False},
        "evaluation": {"max_new_tokens": 4, "batch_size": 8, "latency_requests": 2, "throughput_prompts": 6,
                       "throughput_batch_size": 4},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="where to write distill.yaml and its prompt files")
    parser.add_argument("--train", type=int, default=300, help="training prompts per task")
    parser.add_argument("--eval", type=int, default=50, help="eval prompts per task")
    parser.add_argument("--steps", type=int, default=100, help="training steps per student")
    parser.add_argument("--dev", type=int, help="dev prompts per task for routing (default: the spec's)")
    args = parser.parse_args()
    print(write_spec(args.root, args.train, args.eval, args.steps, dev=args.dev))


if __name__ == "__main__":
    main()
