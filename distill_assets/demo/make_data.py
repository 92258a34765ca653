"""Write the demo tasks' curated inputs: `python -m distill_assets.demo.make_data`.

Fixed seed, so the committed JSONL files are reproducible byte for byte. Train and
eval prompts are disjoint by construction (a prompt is drawn once across both).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from distill_assets.demo.tasks import TASKS

DATA_DIR = Path(__file__).parent / "data"


def draw_unique(task: str, count: int, rng: random.Random, seen: set[str]) -> list[dict]:
    rows = []
    while len(rows) < count:
        prompt, answer = TASKS[task](rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"prompt": prompt, "answer": answer})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=2000, help="training prompts per task")
    parser.add_argument("--eval", type=int, default=200, help="evaluation prompts per task")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    for i, task in enumerate(sorted(TASKS)):
        rng = random.Random(args.seed + i)
        seen: set[str] = set()
        eval_rows = draw_unique(task, args.eval, rng, seen)
        train_rows = draw_unique(task, args.train, rng, seen)
        write_jsonl(args.out / f"{task}_train.jsonl", train_rows)
        write_jsonl(args.out / f"{task}_eval.jsonl", eval_rows)
        print(f"{task}: {len(train_rows)} train, {len(eval_rows)} eval -> {args.out}")


if __name__ == "__main__":
    main()
