"""The generation cache on Postgres (resources/postgres_cache.py), as the pods of a Kubernetes run share it.

`.ci/run` starts Debian's PostgreSQL on loopback (.ci/postgres.sh) and exports
DISTILL_TEST_POSTGRES_URL; without it the tests that need a server skip, as the instance tests do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from resources.backends import Completion, SamplingParams
from resources.cached_backend import CachedBackend
from resources.completion_codec import decode_completion
from resources.generation_cache import CACHE_URL_ENV, open_generation_cache
from resources.postgres_cache import PostgresGenerationCache, is_postgres_url, redact
from tests.conftest import PROJECT_DIR
from tests.test_cache_writer import Counting, prompts

POSTGRES_URL = os.environ.get("DISTILL_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="DISTILL_TEST_POSTGRES_URL is not set: run .ci/postgres.sh (as root) and export the URL it prints",
)


@pytest.fixture
def table():
    """A table of the test's own, dropped afterwards (the test database is shared with the instance tests)."""
    name = f"cache_test_{uuid.uuid4().hex[:10]}"
    yield name
    import psycopg2

    db = psycopg2.connect(POSTGRES_URL.replace("postgresql+psycopg2://", "postgresql://"))
    db.autocommit = True
    with db.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
    db.close()


def test_urls_are_recognised_and_passwords_never_shown():
    assert is_postgres_url("postgresql+psycopg2://u:p@h:5432/d") and is_postgres_url("postgres://h/d")
    assert not is_postgres_url("/var/cache/generations.sqlite")
    assert redact("postgresql://dagster:s3cret@db:5432/dagster") == "postgresql://dagster:***@db:5432/dagster"
    with pytest.raises(RuntimeError, match=r"cannot connect") as raised:
        PostgresGenerationCache("postgresql://dagster:s3cret@127.0.0.1:9/dagster", connect_timeout_s=2)
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)


def completion_with_top_logprobs() -> Completion:
    """A completion with top-2 log-probabilities, built from a row in the cache's first (JSON) format."""
    top = [[{"token": "a", "logprob": -0.125, "token_id": 5}, {"token": "b", "logprob": -2.5, "token_id": 6}]]
    row = {"text": "a", "num_tokens": 1, "finish_reason": "stop", "error": None, "top_logprobs": top}
    return decode_completion(json.dumps(row))


@needs_postgres
def test_answers_round_trip_and_failures_are_not_stored(table):
    cache = PostgresGenerationCache(POSTGRES_URL, table=table, flush_interval_s=3600)
    answer = completion_with_top_logprobs()
    cache.put("k", "t", answer)
    cache.put("failed", "t", Completion.failed("vLLM aborted the request 6 times (finish_reason 'abort')"))
    assert cache.get_many(["k", "failed"]) == {"k": answer}  # still queued
    cache.flush()
    cache.put("k", "t", Completion("later", 1, "stop"))  # the first answer of a key is kept
    cache.close()
    again = PostgresGenerationCache(POSTGRES_URL, table=table)
    assert again.get_many(["k", "failed"]) == {"k": answer} and len(again) == 1
    again.close()


WRITER = """
import sys
from resources.backends import Completion
from resources.postgres_cache import PostgresGenerationCache
cache = PostgresGenerationCache(sys.argv[1], table=sys.argv[2], batch_size=64)
start = int(sys.argv[3])
for i in range(start, start + 300):
    cache.put(f"key{i}", "t", Completion(text=str(i), num_tokens=1, finish_reason="stop"))
"""


@needs_postgres
def test_several_processes_create_and_fill_one_table(table):
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, POSTGRES_URL, table, str(start)], cwd=PROJECT_DIR)
        for start in (0, 150, 300)
    ]  # they race to create the table, then write overlapping keys; none calls close() (committed at exit)
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    cache = PostgresGenerationCache(POSTGRES_URL, table=table)
    assert len(cache) == 600 and cache.get_many(["key599"])["key599"].text == "599"
    cache.close()


@needs_postgres
def test_a_second_pod_asks_the_teacher_nothing_already_answered(table, monkeypatch, tmp_path):
    import resources.postgres_cache as postgres_cache

    monkeypatch.setattr(postgres_cache, "TABLE", table)
    monkeypatch.setenv(CACHE_URL_ENV, POSTGRES_URL)
    first_pod, second_pod = Counting(), Counting()
    for pod, scratch in ((first_pod, tmp_path / "pod1"), (second_pod, tmp_path / "pod2")):
        cache = open_generation_cache(scratch / "generations.sqlite")  # each pod's own scratch: unused
        assert isinstance(cache, PostgresGenerationCache)
        CachedBackend(pod, cache, "t").complete(prompts(20), SamplingParams())
        cache.close()
    assert len(first_pod.asked) == 20 and second_pod.asked == []
    assert not (tmp_path / "pod1").exists()


def test_the_helm_values_give_run_and_step_pods_the_cache_url(tmp_path):
    import yaml

    from distill_assets.k8s_deploy import VALUES_PATH, validate_values

    values = yaml.safe_load(VALUES_PATH.read_text())
    instance = validate_values(values, tmp_path)  # Dagster's and dagster-k8s's schemas
    assert "distill-cache" in instance["run_launcher"]["config"]["env_secrets"]  # run pods, and step pods after them
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert {"name": "distill-cache"} in deployment["envSecrets"]
    assert f"--from-literal={CACHE_URL_ENV}=postgresql://" in VALUES_PATH.read_text()  # how the secret is made
