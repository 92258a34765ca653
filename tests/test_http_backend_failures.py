"""No failure looks like an answer: empty or null content and vLLM's `abort` are retried, then failed, never cached."""

from __future__ import annotations

import threading
from collections import Counter
from types import SimpleNamespace

import pytest

import resources.vllm_backend as vllm_backend
from resources.backends import Request, SamplingParams
from resources.cached_backend import CachedBackend
from resources.generation_cache import GenerationCache
from resources.http_backend import HttpBackend
from resources.retry import RetryPolicy
from tests.openai_server import FakeTeacher, OpenAIServer, reverse_answer

FAST_RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.02)


def answers_badly(bad: tuple, bad_attempts: int):
    """A teacher that answers `bad` (text, finish_reason) to a prompt's first `bad_attempts` requests."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def answer(messages, body):
        with lock:
            seen[messages[-1]["content"]] += 1
            attempt = seen[messages[-1]["content"]]
        if attempt <= bad_attempts:
            text, finish = bad
            return text, finish, [] if text is None else None  # null content: an empty log-prob list for usage
        return reverse_answer(messages, body)

    return answer


def ask(url: str, cache: GenerationCache, prompts: list):
    http = HttpBackend([url], model="fake-teacher", concurrency=4, timeout_s=2, retry=FAST_RETRY, seed=0)
    cached = CachedBackend(http, cache, "fake-teacher")
    return cached.complete([Request(p) for p in prompts], SamplingParams()), cached


CHAT = [[{"role": "user", "content": f"prompt {i}"}] for i in range(4)]
RAW = [f"raw prompt {i}" for i in range(4)]


@pytest.mark.parametrize(
    ("bad", "prompts", "reason"),
    [
        (("", "stop"), CHAT, "HTTP 200 with null or empty message.content (finish_reason 'stop')"),
        ((None, "stop"), CHAT, "HTTP 200 with null or empty message.content"),
        (("", "length"), RAW, "HTTP 200 with null or empty text (finish_reason 'length')"),
        (("half an ans", "abort"), CHAT, "the server aborted the request (finish_reason 'abort')"),
        (("half an ans", "abort"), RAW, "the server aborted the request"),
    ],
)
def test_a_non_answer_is_retried_then_failed_with_its_reason_and_never_cached(tmp_path, bad, prompts, reason):
    teacher = FakeTeacher(answer=answers_badly(bad, bad_attempts=10**6))
    cache = GenerationCache(tmp_path / "c.sqlite")
    with OpenAIServer(teacher) as server:
        completions, cached = ask(server.url, cache, prompts)
        assert all(not c.ok and c.finish_reason == "error" for c in completions)
        assert all(c.error.startswith("gave up after 4 attempts; last:") and reason in c.error for c in completions)
        assert set(teacher.requests.values()) == {4}  # the first try and FAST_RETRY's 3 retries
        assert cached.stats.failed == 4 and len(cache) == 0
        _, again = ask(server.url, cache, prompts)  # nothing cached: the next run asks again
        assert again.stats.sent == 4 and set(teacher.requests.values()) == {8}
    cache.close()


def test_a_non_answer_that_a_retry_fixes_caches_the_real_answer(tmp_path):
    teacher = FakeTeacher(answer=answers_badly((None, "stop"), bad_attempts=2))
    cache = GenerationCache(tmp_path / "c.sqlite")
    with OpenAIServer(teacher) as server:
        completions, _ = ask(server.url, cache, CHAT)
        again, rerun = ask(server.url, cache, CHAT)
    assert [c.text for c in completions] == [p[-1]["content"][::-1] for p in CHAT]
    assert set(teacher.requests.values()) == {3}  # two non-answers, then the answer
    assert rerun.stats.cached == 4 and again == completions  # the cache holds the answers, not the non-answers
    cache.close()


class FakeLLM:
    """vLLM's offline `LLM` as far as the backend uses it: aborts each prompt's first `aborts[prompt]` runs."""

    def __init__(self, aborts: dict[int, int]):
        self.aborts, self.runs = aborts, Counter()

    def get_tokenizer(self):
        return lambda text: {"input_ids": [len(text)]}

    def generate(self, prompts, sampling, use_tqdm=False):
        outputs = []
        for prompt in prompts:
            key = prompt["prompt_token_ids"][0]
            self.runs[key] += 1
            finish = "abort" if self.runs[key] <= self.aborts.get(key, 0) else "stop"
            output = SimpleNamespace(text=f"answer {key}", token_ids=[1, 2], finish_reason=finish, logprobs=None)
            outputs.append(SimpleNamespace(outputs=[output]))
        return outputs


def test_vllm_aborted_requests_are_generated_again_then_failed_and_never_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: SimpleNamespace(SamplingParams=dict))
    llm = FakeLLM(aborts={1: 2, 22: 10**6})  # prompt lengths 1 and 22 stand for the prompts "a" and "b" * 22
    backend = vllm_backend.VLLMBackend(llm, max_retries=3)
    cache = GenerationCache(tmp_path / "c.sqlite")
    cached = CachedBackend(backend, cache, "vllm-teacher")
    completions = cached.complete([Request("a"), Request("b" * 22), Request("cc")], SamplingParams())
    assert [c.ok for c in completions] == [True, False, True]
    assert completions[0].text == "answer 1" and llm.runs[1] == 3  # two aborts, then the answer
    assert completions[1].error == "vLLM aborted the request 4 times (finish_reason 'abort')" and llm.runs[22] == 4
    assert llm.runs[2] == 1 and len(cache) == 2
    cache.close()
