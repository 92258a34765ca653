"""The OpenAI-compatible backend and the generation cache against a real loopback server with injected faults."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from distill_assets.generation import generate_completions
from resources.backends import Request, SamplingParams
from resources.http_backend import HttpBackend
from resources.retry import RetryPolicy
from resources.teachers import build_backend
from resources.transformers_backend import TransformersBackend
from tests.conftest import PROJECT_DIR
from tests.generate_child import TASK, demo_prompts, http_teacher, run
from tests.openai_server import FakeTeacher, OpenAIServer

FAST_RETRY = RetryPolicy(max_retries=6, base_delay_s=0.01, max_delay_s=0.05)


def backend(*urls: str, **kwargs) -> HttpBackend:
    options = {"concurrency": 8, "timeout_s": 0.5, "retry": FAST_RETRY, "seed": 0} | kwargs
    return HttpBackend(list(urls), model="fake-teacher", **options)


def requests(count: int) -> list[Request]:
    return [Request([{"role": "user", "content": f"prompt number {i:04d}"}]) for i in range(count)]


def test_every_prompt_answered_exactly_once_under_20_percent_faults():
    teacher = FakeTeacher(fault_rate=0.2, hang_s=0.8, seed=3)
    with OpenAIServer(teacher) as server:
        reqs = requests(150)
        completions = backend(server.url).complete(reqs, SamplingParams(max_new_tokens=64))
    assert all(c.ok for c in completions), [c.error for c in completions if not c.ok]
    assert [c.text for c in completions] == [r.prompt[-1]["content"][::-1] for r in reqs]
    assert set(teacher.injected) == {"500", "429", "timeout", "drop", "malformed"}
    assert sum(teacher.injected.values()) >= 20  # about 20% of first attempts, some second ones
    assert set(teacher.answers.values()) == {1} and len(teacher.answers) == 150


def test_retry_after_is_honoured():
    # Backoff alone would wait at most 50 ms; the server asks for 1 s.
    teacher = FakeTeacher(fault_rate=1.0, faults=("429",), faulty_attempts=1, retry_after="1")
    with OpenAIServer(teacher) as server:
        started = time.monotonic()
        [completion] = backend(server.url).complete(requests(1), SamplingParams())
        waited = time.monotonic() - started
    assert completion.ok and teacher.requests.total() == 2
    assert waited >= 0.95


def test_request_failing_after_its_retries_is_kept_with_its_reason(tmp_path):
    teacher = FakeTeacher(fault_rate=1.0, faults=("500",), faulty_attempts=10**6)
    with OpenAIServer(teacher) as server:
        spec = http_teacher(server.url).model_copy(update={"max_retries": 2})
        frame, cached = run_teacher(spec, tmp_path / "cache.sqlite", prompts=3)
        assert frame.height == 3 and frame["error"].null_count() == 0
        assert frame["error"][0].startswith("gave up after 3 attempts; last:") and "HTTP 500" in frame["error"][0]
        assert cached.stats.failed == 3 and cached.stats.sent == 3
        assert set(teacher.requests.values()) == {3}
        # Failures are not cached: the next run asks again.
        _, again = run_teacher(spec, tmp_path / "cache.sqlite", prompts=3)
        assert again.stats.sent == 3 and set(teacher.requests.values()) == {6}


def run_teacher(spec, cache_path, prompts: int):
    from distill_assets.generation import teacher_identity
    from resources.cached_backend import CachedBackend
    from resources.generation_cache import GenerationCache

    cache = GenerationCache(cache_path)
    cached = CachedBackend(build_backend(spec, None, None), cache, teacher_identity(spec))
    try:
        return generate_completions(cached, demo_prompts(prompts), spec, TASK), cached
    finally:
        cache.close()


def test_client_errors_are_not_retried():
    teacher = FakeTeacher(fault_rate=1.0, faults=("401",), faulty_attempts=10**6)
    with OpenAIServer(teacher) as server:
        [completion] = backend(server.url).complete(requests(1), SamplingParams())
    assert not completion.ok and "HTTP 401" in completion.error
    assert teacher.requests.total() == 1


def test_round_robin_over_replicas_and_api_key_from_environment(monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-123")
    first, second = FakeTeacher(), FakeTeacher()
    with OpenAIServer(first) as a, OpenAIServer(second) as b:
        key = HttpBackend.api_key_from_env("TEST_TEACHER_KEY")
        completions = backend(a.url, b.url, api_key=key).complete(requests(20), SamplingParams())
    assert all(c.ok for c in completions)
    assert first.requests.total() == 10 and second.requests.total() == 10
    assert first.authorization == second.authorization == {"Bearer sk-test-123"}
    monkeypatch.delenv("TEST_TEACHER_KEY")
    with pytest.raises(ValueError, match=r"api_key_env: environment variable \$TEST_TEACHER_KEY is not set"):
        HttpBackend.api_key_from_env("TEST_TEACHER_KEY")


def test_top_logprobs_from_a_tiny_teacher_served_over_http(tiny_teacher):
    """A real model behind the server: the HTTP answers match the local backend's, with top-k log-probs."""
    local = TransformersBackend.load(str(tiny_teacher), device=__import__("torch").device("cpu"), dtype=None)
    tokens = local.tokenizer.convert_ids_to_tokens
    lock = threading.Lock()

    def answer(messages, body):
        params = SamplingParams(max_new_tokens=body["max_tokens"], top_logprobs=body.get("top_logprobs", 0))
        with lock:
            [c] = local.complete([Request(messages)], params)
        top = None
        if c.top_logprobs:  # the local backend keeps ids: the server sends their token strings
            top = [[(tokens(t.token_id), t.logprob) for t in step] for step in c.top_logprobs.entries()]
        return c.text, c.finish_reason, top

    reqs = requests(6)
    params = SamplingParams(max_new_tokens=6, top_logprobs=3)
    with OpenAIServer(FakeTeacher(answer=answer)) as server:
        remote = backend(server.url).complete(reqs, params)
    expected = local.complete(reqs, params)
    assert [c.text for c in remote] == [c.text for c in expected]
    for r, e in zip(remote, expected):
        assert len(r.top_logprobs) == e.num_tokens and r.top_logprobs.k == 3 and r.top_logprobs.present.all()
        assert r.top_logprobs.tokens == tuple(tuple(tokens(step)) for step in e.top_logprobs.ids.tolist())
        assert (r.top_logprobs.logprobs == e.top_logprobs.logprobs).all()


def cached_keys(path) -> int:
    """Answers in the cache file, read by another connection as a second process would."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        db.close()


def test_kill_9_mid_generation_then_rerun_resends_nothing_answered(tmp_path):
    prompts, concurrency = 200, 4
    teacher = FakeTeacher(latency_s=0.01, fault_rate=0.1, faults=("500", "drop"), seed=1)
    cache_path = tmp_path / "cache.sqlite"
    with OpenAIServer(teacher) as server:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.generate_child", server.url, str(cache_path), str(tmp_path / "x.parquet"),
             "--prompts", str(prompts), "--concurrency", str(concurrency)],
            cwd=PROJECT_DIR, env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None:
                if cached_keys(cache_path) >= 40:
                    break
                time.sleep(0.02)
            assert child.poll() is None, "the child finished or died before it could be killed"
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=10)
        survived = cached_keys(cache_path)
        assert 40 <= survived < prompts
        answered_before = +teacher.answers
        requests_before = +teacher.requests

        resumed, cached = run(server.url, str(cache_path), prompts, concurrency)
        assert cached.stats.cached == survived and cached.stats.sent == prompts - survived
        # No prompt answered and cached before the kill was asked again; at most the
        # requests in flight at the kill were answered twice.
        asked_again = {p for p in teacher.requests if teacher.requests[p] > requests_before[p]}
        assert len(asked_again) == prompts - survived
        assert sum(1 for p in asked_again if answered_before[p]) <= concurrency
        assert all(teacher.answers[p] == 1 for p in teacher.answers if p not in asked_again)

        # A third run is all cache: no request reaches the teacher.
        total = teacher.requests.total()
        rerun, again = run(server.url, str(cache_path), prompts, concurrency)
        assert again.stats.sent == 0 and teacher.requests.total() == total

    with OpenAIServer(FakeTeacher()) as fresh_server:
        uninterrupted, _ = run(fresh_server.url, str(tmp_path / "fresh.sqlite"), prompts, concurrency)
    assert resumed.equals(uninterrupted) and rerun.equals(uninterrupted)
    assert resumed["error"].null_count() == prompts


def test_openai_teacher_in_the_spec_builds_an_http_backend(tmp_path):
    spec = http_teacher("http://127.0.0.1:9/v1", concurrency=3)
    built = build_backend(spec, None, None)
    assert isinstance(built, HttpBackend) and built.concurrency == 3 and built.retry.max_retries == 6
