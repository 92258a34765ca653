"""The durable, content-addressed generation cache, shared by every teacher backend.

A completion is stored under the sha256 of everything that determines it: the teacher
(backend, model, revision), the chat prompt, the sampling parameters and the sample
index. SQLite in WAL mode: several processes can read and write at once, and each answer
is committed as it arrives, so a run killed with kill -9 loses only requests in flight.
Only successful completions are stored; a failed request is sent again next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from resources.backends import Completion, Prompt, SamplingParams
from resources.completion_codec import decode_completion, encode_completion

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


class GenerationCache:
    """completions keyed by `request_key`; safe to share between threads and processes."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every put is its own transaction, durable once it returns.
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (only an OS crash could lose the last commits).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Completion] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[start : start + 500]
                rows = self._db.execute(
                    f"SELECT key, completion FROM completions WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                found.update((key, decode_completion(text)) for key, text in rows)
        return found

    def put(self, key: str, teacher: str, completion: Completion) -> None:
        if not completion.ok:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO completions (key, teacher, completion, created) VALUES (?, ?, ?, ?)",
                (key, teacher, encode_completion(completion), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
