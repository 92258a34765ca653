"""The durable, content-addressed generation cache, shared by every teacher backend.

A completion is stored under the sha256 of everything that determines it: the teacher
(backend, model, revision; an endpoint's URLs), the chat prompt, the sampling parameters and
the sample index. Only successful completions are stored; a failed request is sent again next run.

The store is SQLite in WAL mode under the storage root (several processes can read and write
at once), or, when `DISTILL_CACHE_URL` names one, a Postgres database that the step pods of a
Kubernetes run share (resources/postgres_cache.py); `open_generation_cache` picks. Both write
through `resources.cache_writer`: answers are committed in batches by a writer thread, so a run
killed with kill -9 loses only the answers of the last fraction of a second, which the next run
asks again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path

from resources.backends import Prompt, SamplingParams
from resources.cache_writer import BatchedCache, Row

CACHE_URL_ENV = "DISTILL_CACHE_URL"  # postgresql://user:password@host:5432/db: a cache the whole cluster shares

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    completion BLOB NOT NULL,  -- resources.completion_codec's bytes (older rows: JSON text)
    created REAL NOT NULL
)
"""


def request_key(teacher: str, prompt: Prompt, params: SamplingParams, sample_index: int) -> str:
    """The content address of one request. `n` is left out: raising n reuses the samples already made.

    A chat and the same text as a raw prompt differ (a list against a string); stop strings
    are keyed only when given, so the keys of requests without them stay as they were.
    """
    payload = {
        "teacher": teacher,
        "messages": prompt,
        "sampling": {
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "top_logprobs": params.top_logprobs,
        },
        "sample_index": sample_index,
    }
    if params.stop:
        payload["sampling"]["stop"] = list(params.stop)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class GenerationCache(BatchedCache):
    """The SQLite store: one file, safe to share between threads and processes."""

    def __init__(
        self, path: str | Path, busy_timeout_s: float = 60.0, batch_size: int = 256, flush_interval_s: float = 0.2
    ):
        self.path = Path(path)
        super().__init__(str(self.path), batch_size, flush_interval_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reader = self._connect(busy_timeout_s)
        self._reader.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only an OS crash could lose the last commits).
        self._reader.execute("PRAGMA synchronous=NORMAL")
        self._reader.execute(SCHEMA)
        self._reader_lock = threading.Lock()
        self._writer_db = self._connect(busy_timeout_s)  # used by the writer thread alone
        self._writer_db.execute("PRAGMA synchronous=NORMAL")
        self.start_writer()

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        # Autocommit mode: transactions are the explicit BEGIN ... COMMIT of each batch.
        return sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)

    def _read(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._reader_lock:
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[start : start + 500]
                rows = self._reader.execute(
                    f"SELECT key, completion FROM completions WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                found.update(rows)
        return found

    def _write(self, rows: list[Row]) -> None:
        db = self._writer_db
        db.execute("BEGIN IMMEDIATE")  # takes the write lock now, waiting up to busy_timeout_s for it
        try:
            db.executemany(
                "INSERT OR IGNORE INTO completions (key, teacher, completion, created) VALUES (?, ?, ?, ?)", rows
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _count(self) -> int:
        with self._reader_lock:
            return self._reader.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def _close_store(self) -> None:
        with self._reader_lock:
            self._reader.close()
        self._writer_db.close()


def open_generation_cache(sqlite_path: str | Path) -> BatchedCache:
    """The cache every teacher shares: Postgres when `DISTILL_CACHE_URL` is set, else SQLite at `sqlite_path`."""
    url = os.environ.get(CACHE_URL_ENV)
    if not url:
        return GenerationCache(sqlite_path)
    from resources.postgres_cache import PostgresGenerationCache, is_postgres_url

    if not is_postgres_url(url):
        raise ValueError(f"${CACHE_URL_ENV}: expected a postgresql://user:password@host:port/database URL")
    return PostgresGenerationCache(url)
