"""Write the real example's curated inputs: `python examples/real/make_data.py`.

Two tasks a few-shot base model does well and a 135M instruct model does poorly zero-shot:
`dates` (a date written one of six unambiguous ways -> ISO 8601) and `sentiment` (a short
product or film review from templates and word lists -> positive or negative). Each prompt is
an instruction the student can follow zero-shot. Fixed seed, so the committed JSONL files are
reproducible byte for byte; train and eval prompts are disjoint (a prompt is drawn once across both).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from distill_assets.demo.make_data import write_jsonl
from distill_assets.demo.tasks import MONTHS

DATA_DIR = Path(__file__).resolve().parent / "data"
DATES_INSTRUCTION = "Write this date in ISO 8601 (YYYY-MM-DD): "
SENTIMENT_INSTRUCTION = "Is this review positive or negative? Answer with one word. Review: "


def dates(rng: random.Random) -> tuple[str, str]:
    """A date between 1950 and 2049 written with the month named, or year first: never day/month ambiguous."""
    d = date(1950, 1, 1) + timedelta(days=rng.randint(0, 36524))
    month = MONTHS[d.month - 1]
    written = rng.choice(
        [
            f"{month} {d.day}, {d.year}",
            f"{d.day} {month} {d.year}",
            f"{month[:3]} {d.day} {d.year}",
            f"{month[:3]} {d.day}, {d.year}",
            f"{d.day} {month[:3]} {d.year}",
            f"{d.year}/{d.month:02d}/{d.day:02d}",
        ]
    )
    return DATES_INSTRUCTION + written, d.isoformat()


# (subjects, positive predicates, negative predicates, positive closers, negative closers) per domain.
REVIEWS = {
    "product": (
        ["The battery life", "The screen", "This blender", "This headset", "The customer service",
         "The build quality", "This phone case", "The delivery", "This vacuum cleaner", "The keyboard"],
        ["is excellent", "is fantastic", "exceeded my expectations", "works perfectly", "is worth every penny",
         "is superb", "impressed me", "is outstanding", "is great", "is better than I hoped"],
        ["is terrible", "is awful", "broke after a week", "was a waste of money", "is disappointing",
         "fell apart quickly", "stopped working", "is a total letdown", "is poor", "is worse than I feared"],
        ["I would buy it again.", "Highly recommended.", "Five stars.", "I love it.", "My whole family uses it."],
        ["I want a refund.", "Avoid it.", "One star.", "I regret buying it.", "It went back the next day."],
    ),
    "film": (
        ["The plot", "The acting", "This movie", "The soundtrack", "The ending", "This film", "The dialogue",
         "The score", "The cast", "The cinematography"],
        ["is brilliant", "is wonderful", "moved me", "is a joy", "kept me hooked", "is stunning",
         "is superb", "is gripping", "is delightful", "is a triumph"],
        ["is dull", "is boring", "fell flat", "is a mess", "put me to sleep", "is painful to sit through",
         "is forgettable", "is dreadful", "is lifeless", "is a disaster"],
        ["I would watch it again.", "A must-see.", "Ten out of ten.", "I loved every minute.", "Go see it."],
        ["I walked out halfway.", "Skip it.", "What a waste of an evening.", "I want those two hours back.",
         "Not worth the ticket."],
    ),
}  # fmt: skip
OPENERS = ["", "Honestly, ", "Overall, ", "In short, ", "I have to say ", "Well, "]


def sentiment(rng: random.Random) -> tuple[str, str]:
    """A one- or two-sentence review whose words all lean one way, and its label."""
    subjects, good, bad, good_closers, bad_closers = REVIEWS[rng.choice(sorted(REVIEWS))]
    label = rng.choice(["positive", "negative"])
    predicates, closers = (good, good_closers) if label == "positive" else (bad, bad_closers)
    opener, subject = rng.choice(OPENERS), rng.choice(subjects)
    sentence = f"{opener}{subject[0].lower() + subject[1:] if opener else subject} {rng.choice(predicates)}."
    review = sentence if rng.random() < 0.3 else f"{sentence} {rng.choice(closers)}"
    return SENTIMENT_INSTRUCTION + review, label


TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {"dates": dates, "sentiment": sentiment}


def draw_unique(make: Callable[[random.Random], tuple[str, str]], count: int, rng: random.Random, seen: set[str]):
    rows = []
    while len(rows) < count:
        prompt, answer = make(rng)
        if prompt not in seen:
            seen.add(prompt)
            rows.append({"prompt": prompt, "answer": answer})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400, help="training prompts per task")
    parser.add_argument("--eval", type=int, default=100, help="evaluation prompts per task")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    for i, (task, make) in enumerate(sorted(TASKS.items())):
        rng = random.Random(args.seed + i)
        seen: set[str] = set()
        eval_rows = draw_unique(make, args.eval, rng, seen)
        train_rows = draw_unique(make, args.train, rng, seen)
        write_jsonl(args.out / f"{task}_train.jsonl", train_rows)
        write_jsonl(args.out / f"{task}_eval.jsonl", eval_rows)
        print(f"{task}: {len(train_rows)} train, {len(eval_rows)} eval -> {args.out}")


if __name__ == "__main__":
    main()
