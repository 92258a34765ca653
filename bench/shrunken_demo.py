"""A copy of the demo spec at a size that runs in minutes: fewer prompts, training steps, timed requests.

The benchmarks in this folder that run the whole graph use it; the shape (2 teachers,
3 tasks, 2 students) and every code path are the demo's.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill_assets.demo.make_data import DATA_DIR

PROJECT_DIR = Path(__file__).resolve().parent.parent


def write_spec(
    root: Path, train: int = 300, eval_: int = 50, steps: int = 100, teachers: dict[str, str] | None = None
) -> Path:
    """The demo's distill.yaml under `root`, with `train`/`eval_` prompts per task and `steps` per student.

    `teachers` maps a teacher name to a checkpoint path to use instead of the demo's
    (when the demo teachers are not trained yet); quality bounds are relaxed then, as an
    untrained model would fail the verifier checks.
    """
    root.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((PROJECT_DIR / "distill.yaml").read_text())
    for task in data["tasks"]:
        for field, split, count in (("source", "train", train), ("eval_source", "eval", eval_)):
            lines = (DATA_DIR / f"{task['name']}_{split}.jsonl").read_text().splitlines()[:count]
            path = root / "data" / f"{task['name']}_{split}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(line + "\n" for line in lines))
            task[field] = str(path)
        task["eval_size"] = eval_
    for teacher in data["teachers"]:
        teacher["model"] = (teachers or {}).get(teacher["name"]) or str(PROJECT_DIR / teacher["model"])
    for student in data["students"]:
        student["training"] |= {"max_steps": steps, "logging_steps": max(steps // 4, 1)}
        tokenizer = student["base"].get("tokenizer")
        if tokenizer:
            student["base"]["tokenizer"] = (teachers or {}).get("teacher_a") or str(PROJECT_DIR / tokenizer)
    data["evaluation"] |= {"latency_requests": 5, "throughput_prompts": 32, "batch_size": 64}
    if teachers:
        data["quality"] |= {"min_verifier_pass_rate": 0.0, "min_kept_rate": 0.0, "curate": False,
                            "max_duplicate_rate": 1.0, "max_empty_rate": 1.0, "max_refusal_rate": 1.0,
                            "max_leak_rate": 1.0}  # fmt: skip
    data["storage_root"] = str(root / "artifacts")
    path = root / "distill.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False))
    return path


def demo_teachers_or_random() -> dict[str, str] | None:
    """None when the demo teachers exist; else random checkpoints of their size to stand in."""
    if all((PROJECT_DIR / f"distill_assets/demo/models/{t}").is_dir() for t in ("teacher_a", "teacher_b")):
        return None
    from bench.common import demo_teacher

    path = demo_teacher()
    return {"teacher_a": path, "teacher_b": path}
