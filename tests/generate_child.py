"""Generation in a process of its own, for the kill -9 test: the asset's code path against an HTTP teacher.

python -m tests.generate_child URL CACHE OUT [--prompts N] [--concurrency C]
"""

from __future__ import annotations

import argparse

import polars as pl

from distill_assets.generation import generate_completions, teacher_identity
from distill_assets.spec import TaskSpec, TeacherSpec
from resources.cached_backend import CachedBackend
from resources.generation_cache import GenerationCache
from resources.teachers import build_backend


def demo_prompts(count: int) -> pl.DataFrame:
    prompts = [f"prompt number {i:04d}" for i in range(count)]
    return pl.DataFrame({"task": "demo", "prompt_id": [f"p{i}" for i in range(count)], "prompt": prompts})


def http_teacher(url: str, concurrency: int = 4, **generation) -> TeacherSpec:
    return TeacherSpec(
        name="http_teacher",
        backend="openai",
        model="fake-teacher",
        base_urls=[url],
        tasks=["demo"],
        concurrency=concurrency,
        timeout_s=0.5,
        max_retries=6,
        generation={"max_new_tokens": 32, **generation},
    )


TASK = TaskSpec(name="demo", source="unused.jsonl")


def run(url: str, cache_path: str, prompts: int, concurrency: int) -> tuple[pl.DataFrame, CachedBackend]:
    teacher = http_teacher(url, concurrency)
    cache = GenerationCache(cache_path)
    backend = CachedBackend(build_backend(teacher, spec=None, placement=None), cache, teacher_identity(teacher))
    try:
        return generate_completions(backend, demo_prompts(prompts), teacher, TASK), backend
    finally:
        backend.close()
        cache.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("cache")
    parser.add_argument("out")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    frame, _ = run(args.url, args.cache, args.prompts, args.concurrency)
    frame.write_parquet(args.out)
