"""Rerun of an unchanged partition through the generation cache: 0 teacher requests, <= 5% of the first run's time.

    python -m bench.cache_rerun [--prompts 256] [--model DIR]

Both runs take the asset's path: a CachedBackend that loads the teacher only when the
cache lacks answers, then generate_completions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from bench.common import demo_prompts, demo_teacher
from distill_assets.generation import generate_completions, teacher_identity
from distill_assets.spec import TaskSpec, TeacherSpec
from resources.cached_backend import CachedBackend
from resources.generation_cache import GenerationCache
from resources.transformers_backend import TransformersBackend


def run(teacher: TeacherSpec, prompts: pl.DataFrame, cache_path: Path) -> tuple[float, int, pl.DataFrame]:
    started = time.perf_counter()
    cache = GenerationCache(cache_path)
    g = teacher.generation
    backend = CachedBackend(
        lambda: TransformersBackend.load(teacher.model, torch.device("cpu"), torch.float32, batch_size=g.batch_size),
        cache,
        teacher_identity(teacher),
    )
    frame = generate_completions(backend, prompts, teacher, TaskSpec(name="demo", source="-"))
    backend.close()
    cache.close()
    return time.perf_counter() - started, backend.stats.sent, frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--model")
    args = parser.parse_args()
    model = demo_teacher(args.model)
    texts = demo_prompts(args.prompts)
    prompts = pl.DataFrame({"task": "demo", "prompt_id": [f"p{i}" for i in range(len(texts))], "prompt": texts})
    teacher = TeacherSpec(
        name="bench", model=model, tasks=["demo"], generation={"max_new_tokens": 16, "batch_size": 64}
    )
    cache_path = Path(tempfile.mkdtemp(prefix="bench_cache_")) / "generations.sqlite"
    first_s, first_sent, first = run(teacher, prompts, cache_path)
    again_s, again_sent, again = run(teacher, prompts, cache_path)
    print(f"{len(texts)} prompts, cache {cache_path}")
    print(f"first run: {first_s:7.2f}s, {first_sent} teacher requests")
    print(f"rerun:     {again_s:7.3f}s, {again_sent} teacher requests, same frame: {again.equals(first)}")
    print(f"rerun / first run: {again_s / first_s:.2%} (target <= 5%, 0 requests)")


if __name__ == "__main__":
    main()
