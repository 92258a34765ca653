"""The cache's writer thread: put queues, batches are committed off the caller's thread, a kill loses only the queue."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from resources.backends import Completion, Request, SamplingParams, TeacherBackend
from resources.cache_writer import BatchedCache, CacheWriteError
from resources.cached_backend import CachedBackend
from resources.generation_cache import CACHE_URL_ENV, GenerationCache, open_generation_cache
from tests.conftest import PROJECT_DIR

NEVER = 3600.0  # a flush interval no test waits for: only batch size, flush() and close() write


def answer(i: int) -> Completion:
    return Completion(text=f"answer {i}", num_tokens=2, finish_reason="stop")


def rows_on_disk(path) -> int:
    """Committed rows, read by a connection of its own as another process would."""
    db = sqlite3.connect(path, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    finally:
        db.close()


def test_put_only_queues_and_flush_commits(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = GenerationCache(path, batch_size=10_000, flush_interval_s=NEVER)
    for i in range(50):
        cache.put(f"k{i}", "t", answer(i))
    assert rows_on_disk(path) == 0  # nothing written on the caller's thread
    assert cache.get_many(["k0", "k49", "missing"]) == {"k0": answer(0), "k49": answer(49)}  # queued answers count
    cache.flush()
    assert rows_on_disk(path) == 50
    cache.close()


def test_a_full_batch_is_written_without_a_flush(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = GenerationCache(path, batch_size=20, flush_interval_s=NEVER)
    for i in range(20):
        cache.put(f"k{i}", "t", answer(i))
    deadline = time.monotonic() + 30
    while rows_on_disk(path) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rows_on_disk(path) == 20
    cache.close()


def test_first_answer_kept_failures_never_stored_and_len_counts_the_queue(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite", flush_interval_s=NEVER)
    cache.put("k", "t", answer(1))
    cache.flush()
    cache.put("k", "t", answer(2))
    cache.put("failed", "t", Completion.failed("HTTP 200 with null or empty message.content"))
    cache.put("queued", "t", answer(3))
    assert len(cache) == 2
    assert cache.get_many(["k", "failed", "queued"]) == {"k": answer(1), "queued": answer(3)}
    cache.close()
    cache.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="is closed"):
        cache.put("late", "t", answer(4))


def test_puts_from_many_threads_all_land(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite", batch_size=7)

    def writer(start: int) -> None:
        for i in range(start, start + 200):
            cache.put(f"k{i}", "t", answer(i))

    threads = [threading.Thread(target=writer, args=(start,)) for start in (0, 200, 400, 600)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.close()
    assert rows_on_disk(tmp_path / "c.sqlite") == 800


class BrokenStore(BatchedCache):
    """A store whose disk is full: every batch fails."""

    def __init__(self):
        super().__init__("broken store", batch_size=1, flush_interval_s=NEVER)
        self.start_writer()

    def _read(self, keys):
        return {}

    def _write(self, rows):
        raise OSError("disk full")

    def _count(self):
        return 0

    def _close_store(self):
        pass


def test_a_failing_write_is_raised_to_the_caller_not_swallowed():
    cache = BrokenStore()
    cache.put("k", "t", answer(1))
    with pytest.raises(CacheWriteError, match=r"broken store: writing failed \(OSError: disk full\); 1 answers"):
        cache.flush()
    with pytest.raises(CacheWriteError):
        cache.put("k2", "t", answer(2))
    with pytest.raises(CacheWriteError):
        cache.close()


class Counting(TeacherBackend):
    """Answers every request at once and counts the prompts it was asked."""

    name = "counting"

    def __init__(self):
        self.asked: list[str] = []

    def complete(self, requests, params, progress=None, on_completion=None):
        out = []
        for i, request in enumerate(requests):
            self.asked.append(request.prompt)
            out.append(Completion(text=request.prompt[::-1], num_tokens=1, finish_reason="stop"))
            if on_completion:
                on_completion(i, out[-1])
        return out


def prompts(count: int) -> list[Request]:
    return [Request(f"prompt {i:03d}") for i in range(count)]


# Answers N prompts (committed when complete() returns), then M more that stay queued, then waits to be killed.
KILLED_CHILD = """
import sys, time
from resources.cached_backend import CachedBackend
from resources.generation_cache import GenerationCache
from resources.backends import SamplingParams
from tests.test_cache_writer import Counting, Stalls, prompts
path, answered, queued = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = GenerationCache(path, batch_size=10**6, flush_interval_s=3600)
CachedBackend(Counting(), cache, "t").complete(prompts(answered), SamplingParams())
CachedBackend(Stalls(), cache, "t").complete(prompts(answered + queued)[answered:], SamplingParams())
"""


class Stalls(Counting):
    """Reports its answers, then says so on stdout and waits, as a generation still running does."""

    def complete(self, requests, params, progress=None, on_completion=None):
        super().complete(requests, params, progress, on_completion)
        print("queued", flush=True)
        time.sleep(3600)


def test_kill_9_between_batches_loses_only_the_queue_and_the_rerun_resends_only_that(tmp_path):
    path, answered, queued = tmp_path / "c.sqlite", 30, 12
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path), str(answered), str(queued)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "queued"  # type: ignore[union-attr]
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert rows_on_disk(path) == answered  # the committed batch survived; the queued answers died with the process

    cache = GenerationCache(path)
    teacher = Counting()
    rerun = CachedBackend(teacher, cache, "t")
    completions = rerun.complete(prompts(answered + queued), SamplingParams())
    cache.close()
    assert rerun.stats.cached == answered and rerun.stats.sent == queued
    assert teacher.asked == [r.prompt for r in prompts(answered + queued)[answered:]]
    assert [c.text for c in completions] == [r.prompt[::-1] for r in prompts(answered + queued)]
    assert rows_on_disk(path) == answered + queued


def test_the_cache_store_is_sqlite_unless_a_postgres_url_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_URL_ENV, raising=False)
    cache = open_generation_cache(tmp_path / "c.sqlite")
    assert isinstance(cache, GenerationCache) and cache.path == tmp_path / "c.sqlite"
    cache.close()
    monkeypatch.setenv(CACHE_URL_ENV, "mysql://user:secret@host/db")
    with pytest.raises(ValueError, match=r"\$DISTILL_CACHE_URL: expected a postgresql://") as raised:
        open_generation_cache(tmp_path / "c.sqlite")
    assert "secret" not in str(raised.value)
