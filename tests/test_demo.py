"""The embedded demo: its data and its committed teacher checkpoints."""

import json

import pytest
import torch

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.train_teachers import MODELS_DIR
from distill_assets.evaluation import score_predictions
from distill_assets.generation import chat_prompt
from distill_assets.inputs import curate
from distill_assets.spec import EvaluationSpec, load_spec
from resources.backends import SamplingParams
from resources.transformers_backend import TransformersBackend
from tests.conftest import PROJECT_DIR, TASKS


@pytest.mark.parametrize("task", TASKS)
def test_demo_data_is_large_enough_and_disjoint(task):
    spec = load_spec(PROJECT_DIR / "distill.yaml")
    t = spec.task(task)
    train, held, stats, bad = curate(t, spec.resolve_path(t.source), spec.resolve_path(t.eval_source))
    assert train.height >= 2000 and held.height >= 200
    assert stats == {"duplicates_dropped": 0, "eval_overlap_dropped": 0, "bad_rows": 0} and bad == []
    assert held["reference"].null_count() == 0


@pytest.fixture(scope="module")
def teachers():
    cpu = torch.device("cpu")
    names = ("teacher_a", "teacher_b")
    loaded = {name: TransformersBackend.load(str(MODELS_DIR / name), cpu, torch.float32) for name in names}
    yield loaded
    for backend in loaded.values():
        backend.close()


def eval_rows(task: str, n: int):
    import polars as pl

    rows = [json.loads(line) for line in (DATA_DIR / f"{task}_eval.jsonl").read_text().splitlines()[:n]]
    return pl.DataFrame(
        {"prompt_id": [str(i) for i in range(n)], "task": task, "prompt": [r["prompt"] for r in rows],
         "reference": [r["answer"] for r in rows]}
    )  # fmt: skip


SPECIALTIES = {"teacher_a": {"dates", "units"}, "teacher_b": {"reverse"}}


def test_teachers_are_specialists(teachers):
    """Each demo teacher is strong on its own tasks and clearly weaker on the others."""
    spec = load_spec(PROJECT_DIR / "distill.yaml")
    settings = EvaluationSpec(max_new_tokens=16, batch_size=100)
    for teacher in spec.teachers:
        for task in spec.tasks:
            rows = eval_rows(task.name, 100)
            frame = score_predictions(teachers[teacher.name], rows, task, settings, teacher.name, "teacher")
            score = frame["score"].mean()
            if task.name in SPECIALTIES[teacher.name]:  # the spec routes by measurement (routing: auto)
                assert score >= 0.93, (teacher.name, task.name, score)
            else:
                assert score <= 0.6, (teacher.name, task.name, score)


def test_batched_generation_matches_one_at_a_time(teachers):
    """Left padding and the KV cache must not change greedy outputs."""
    backend = teachers["teacher_a"]
    prompts = [chat_prompt(p, None) for p in eval_rows("dates", 12)["prompt"]]
    params = SamplingParams(max_new_tokens=12)
    batched = backend.generate(prompts, params)
    single = [backend.generate([p], params)[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.finish_reason == "stop" for c in batched)
    assert len({len(backend.encode([p])[0]) for p in prompts}) > 1  # the batch really was padded
