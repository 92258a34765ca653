"""The generation cache's teacher identity: an endpoint is part of it; local teachers keep the keys they had."""

from __future__ import annotations

from distill_assets.generation import teacher_identity
from distill_assets.spec import TeacherSpec
from resources.backends import SamplingParams
from resources.generation_cache import request_key

CHAT = [{"role": "user", "content": "hi"}]


def openai(*urls: str, model: str = "llama") -> TeacherSpec:
    return TeacherSpec(name="t", backend="openai", model=model, base_urls=list(urls))


def key(teacher: TeacherSpec) -> str:
    return request_key(teacher_identity(teacher), CHAT, SamplingParams(top_logprobs=20), 0)


def test_two_endpoints_serving_one_model_name_are_two_teachers():
    assert key(openai("http://gpu-1:8000/v1")) != key(openai("http://gpu-2:8000/v1"))
    assert key(openai("http://gpu-1:8000/v1")) != key(openai("http://gpu-1:8000/v1", model="other"))


def test_replicas_listed_together_are_one_identity_in_any_order():
    replicas = openai("http://gpu-1:8000/v1", "http://gpu-2:8000/v1/")
    assert key(replicas) == key(openai("http://gpu-2:8000/v1", "http://gpu-1:8000/v1"))
    assert key(replicas) != key(openai("http://gpu-1:8000/v1"))


def test_a_variable_endpoint_is_identified_by_its_reference_set_or_not(monkeypatch):
    monkeypatch.delenv("DISTILL_TEACHER_URL", raising=False)
    teacher = openai("${DISTILL_TEACHER_URL}")
    unset = key(teacher)  # computable where the variable is unset (the UI, the daemon)
    monkeypatch.setenv("DISTILL_TEACHER_URL", "http://127.0.0.1:41234/v1")  # a free port, new each run
    assert key(teacher) == unset
    assert key(teacher) != key(openai("${OTHER_TEACHER_URL}"))


def test_local_teachers_keep_the_cache_keys_they_had():
    # Identities and keys as the code before endpoints entered the identity computed them.
    local = TeacherSpec(name="a", model="org/model", revision="v1")
    vllm = TeacherSpec(name="b", backend="vllm", model="org/model")
    assert teacher_identity(local) == '{"backend": "transformers", "model": "org/model", "revision": "v1"}'
    assert key(local) == "f2c2999e26dc39e228262ecc5c67645cbd86349285e0c457f760ba74034beb13"
    assert key(vllm) == "ebd51e0cb63e9f343dcda120285e6c6cc4e71f4e90344144ad4cb396ddb21660"
