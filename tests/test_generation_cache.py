"""The generation cache and sampling options with the local transformers backend (tiny teacher)."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import torch

from distill_assets.generation import generate_completions, teacher_identity
from distill_assets.spec import TaskSpec, TeacherSpec
from resources.backends import Completion, SamplingParams, TopK
from resources.cached_backend import CachedBackend
from resources.generation_cache import GenerationCache, request_key
from resources.transformers_backend import TransformersBackend
from tests.conftest import PROJECT_DIR
from tests.generate_child import demo_prompts

TASK = TaskSpec(name="demo", source="unused.jsonl")


def teacher(path, **generation) -> TeacherSpec:
    generation = {"max_new_tokens": 5, "batch_size": 4} | generation
    return TeacherSpec(name="tiny", model=str(path), tasks=["demo"], generation=generation)


def generate(spec: TeacherSpec, cache_path, prompts: int = 6) -> tuple[pl.DataFrame, CachedBackend]:
    local = TransformersBackend.load(spec.model, torch.device("cpu"), torch.float32, batch_size=4)
    cache = GenerationCache(cache_path)
    cached = CachedBackend(local, cache, teacher_identity(spec))
    try:
        return generate_completions(cached, demo_prompts(prompts), spec, TASK), cached
    finally:
        cache.close()


def test_n_samples_per_prompt_and_a_cached_rerun(tiny_teacher, tmp_path):
    spec = teacher(tiny_teacher, n=3, temperature=1.0, seed=7)
    first, run1 = generate(spec, tmp_path / "c.sqlite")
    assert first.height == 6 * 3 and first["sample_index"].to_list() == [0, 1, 2] * 6
    assert first.group_by("prompt_id").agg(pl.col("completion").n_unique())["completion"].max() > 1
    assert run1.stats.sent == 18 and run1.stats.cached == 0

    second, run2 = generate(spec, tmp_path / "c.sqlite")
    assert run2.stats.sent == 0 and run2.stats.cached == 18
    assert second.equals(first)

    # Raising n reuses the samples already made; changing the sampling misses the cache.
    _, run3 = generate(teacher(tiny_teacher, n=4, temperature=1.0, seed=7), tmp_path / "c.sqlite")
    assert run3.stats.cached == 18 and run3.stats.sent == 6
    _, run4 = generate(teacher(tiny_teacher, n=3, temperature=0.5, seed=7), tmp_path / "c.sqlite")
    assert run4.stats.cached == 0


def test_top_logprobs_capture_the_greedy_choice(tiny_teacher, tmp_path):
    frame, _ = generate(teacher(tiny_teacher, top_logprobs=4), tmp_path / "c.sqlite")
    assert frame["error"].null_count() == frame.height
    local = TransformersBackend.load(str(tiny_teacher), torch.device("cpu"), torch.float32)
    assert frame["topk_tokens"].null_count() == frame.height  # a local backend gives ids, not strings
    for row in frame.iter_rows(named=True):
        ids, logprobs = row["topk_ids"], row["topk_logprobs"]
        assert len(ids) == len(logprobs) == row["num_tokens"] and all(len(step) == 4 for step in ids)
        for step in logprobs:
            assert step == sorted(step, reverse=True) and step[0] <= 0
        # Greedy decoding picks the most likely token: the top-1 ids spell the completion.
        top1 = [step[0] for step in ids]
        assert local.tokenizer.decode(top1, skip_special_tokens=True) == row["completion"]


def test_a_retrained_checkpoint_is_a_different_teacher(tiny_teacher, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_teacher, copy)
    before = teacher_identity(teacher(copy), spec=_spec_for(copy))
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert teacher_identity(teacher(copy), spec=_spec_for(copy)) != before


def _spec_for(path):
    class _Resolver:
        def model_path(self, model: str) -> str:
            return model

    return _Resolver()


WRITER = """
import sys
from resources.backends import Completion
from resources.generation_cache import GenerationCache
cache = GenerationCache(sys.argv[1])
start = int(sys.argv[2])
for i in range(start, start + 300):
    cache.put(f"key{i}", "t", Completion(text=str(i), num_tokens=1, finish_reason="stop"))
"""


def test_several_processes_write_one_cache(tmp_path):
    path = tmp_path / "shared.sqlite"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], cwd=PROJECT_DIR)
        for start in (0, 150, 300)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    cache = GenerationCache(path)
    assert len(cache) == 600
    assert cache.get_many(["key0", "key599"])["key599"].text == "599"
    cache.close()


def test_completion_round_trips_through_the_cache(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    completion = Completion("a", 1, "stop", top_logprobs=TopK.from_steps([[-0.1, -2.5]], ids=[[5, 6]]))
    key = request_key("t", [{"role": "user", "content": "x"}], SamplingParams(top_logprobs=2), 0)
    cache.put(key, "t", completion)
    cache.put("failed", "t", Completion.failed("HTTP 500"))
    assert cache.get_many([key, "failed"]) == {key: completion}
    cache.close()


def test_a_run_the_cache_answers_never_builds_the_backend(tiny_teacher, tmp_path):
    spec = teacher(tiny_teacher)
    generate(spec, tmp_path / "c.sqlite")
    cache = GenerationCache(tmp_path / "c.sqlite")

    def must_not_load():
        raise AssertionError("the teacher was loaded although every answer is cached")

    cached = CachedBackend(must_not_load, cache, teacher_identity(spec))
    frame = generate_completions(cached, demo_prompts(6), spec, TASK)
    assert frame.height == 6 and cached.stats.cached == 6
    cached.close()
    cache.close()


def test_vllm_backend_without_vllm_says_how_to_install():
    import importlib.util

    import pytest

    from resources.vllm_backend import VLLMBackend

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(RuntimeError, match=r"pip install 'distill\[vllm\]'"):
        VLLMBackend.load("any/model")
