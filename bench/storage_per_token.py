"""Bytes per generated token that the pipeline stores: the generation cache (SQLite) and the frame (parquet).

python -m bench.storage_per_token [--completions 2000] [--tokens 256] [--top-k 20]

The completions go through the asset's own path (CachedBackend over the GenerationCache,
then generate_completions) from a stand-in teacher that answers with BPE-like tokens
(English words and pieces, 4 to 5 characters a token), with and without its top-k
log-probabilities per token (what offline logit distillation keeps). docs/scaling.md (through
bench/scaling_estimate.py) multiplies these figures by a run's token count.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import polars as pl

from distill_assets.generation import generate_completions
from distill_assets.spec import TaskSpec, TeacherSpec
from resources.backends import Completion, TeacherBackend, TokenLogprob
from resources.cached_backend import CachedBackend
from resources.generation_cache import GenerationCache

TEXT = (
    "the answer is because we first convert each value into the target unit then multiply by ten and "
    "add result date month year reverse letters word total therefore step check final format output"
)
WORDS = TEXT.split()


class StandIn(TeacherBackend):
    """Answers every request with `tokens` BPE-like tokens, and their top-k alternatives if asked."""

    name = "stand_in"

    def __init__(self, tokens: int, seed: int = 0):
        self.tokens, self.rng = tokens, random.Random(seed)

    def _token(self) -> str:
        word = self.rng.choice(WORDS)
        return (" " + word)[: self.rng.randint(3, 6)]

    def complete(self, requests, params, progress=None, on_completion=None):
        out = []
        for i, _ in enumerate(requests):
            pieces = [self._token() for _ in range(self.tokens)]
            top = None
            if params.top_logprobs:
                top = tuple(
                    tuple(
                        TokenLogprob(p if j == 0 else self._token(), -0.05 - 1.7 * j * self.rng.random(),
                                     self.rng.randrange(128_256))
                        for j in range(params.top_logprobs)
                    )
                    for p in pieces
                )  # fmt: skip
            completion = Completion("".join(pieces), self.tokens, "length", top_logprobs=top)
            out.append(completion)
            if on_completion:
                on_completion(i, completion)
        return out


def measure(completions: int, tokens: int, top_k: int, work: Path) -> dict[str, float]:
    teacher = TeacherSpec(
        name="t", model="stand-in", tasks=["task"],
        generation={"max_new_tokens": tokens, "temperature": 0.0, "top_logprobs": top_k},
    )  # fmt: skip
    task = TaskSpec(name="task", source="-")
    prompts = pl.DataFrame(
        {"task": "task", "prompt_id": [f"p{i}" for i in range(completions)],
         "prompt": [f"Question {i}: convert 12.5 km to m and explain." for i in range(completions)]}
    )  # fmt: skip
    cache_path = work / f"cache_{top_k}.sqlite"
    cache = GenerationCache(cache_path)
    backend = CachedBackend(StandIn(tokens), cache, "stand-in")
    frame = generate_completions(backend, prompts, teacher, task)
    cache.close()
    parquet = work / f"frame_{top_k}.parquet"
    frame.write_parquet(parquet)
    total = completions * tokens
    chars = sum(len(t) for t in frame["completion"])
    return {
        "chars_per_token": chars / total,
        "cache_bytes_per_token": cache_path.stat().st_size / total,
        "parquet_bytes_per_token": parquet.stat().st_size / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="distill-storage-") as tmp:
        rows = {k: measure(args.completions, args.tokens, k, Path(tmp)) for k in (0, args.top_k)}
    print(f"{args.completions} completions x {args.tokens} tokens")
    print("| top-k log-probs kept | chars/token | cache (SQLite) bytes/token | frame (parquet) bytes/token |")
    print("| --- | --- | --- | --- |")
    for k, r in rows.items():
        print(f"| {k} | {r['chars_per_token']:.2f} | {r['cache_bytes_per_token']:.1f} | "
              f"{r['parquet_bytes_per_token']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
