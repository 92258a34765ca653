"""Any teacher backend behind the generation cache: answered requests are never sent again.

`CachedBackend.complete` looks every request up in the cache, sends only the misses to
the wrapped backend, and hands each answer to the cache the moment the backend reports it.
That hand-off only queues the answer (resources/cache_writer.py): the backend's event loop
never waits on encoding or on the database. When `complete` returns, every answer it got is
committed. It keeps the run's counts (`GenerationStats`) for progress lines and asset metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from resources.backends import Completion, OnCompletion, Progress, Request, SamplingParams, TeacherBackend
from resources.cache_writer import BatchedCache
from resources.generation_cache import request_key


@dataclass
class GenerationStats:
    total: int = 0  # requests asked for: prompts x n
    cached: int = 0  # answered from the cache
    sent: int = 0  # passed to the teacher backend
    answered: int = 0  # of those, answered
    failed: int = 0  # of those, failed after their retries
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def done(self) -> int:
        return self.cached + self.answered + self.failed

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    def rate(self) -> float:
        """Teacher requests completed per second (cache hits excluded)."""
        return (self.answered + self.failed) / max(self.seconds, 1e-9)

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else ("0s" if left == 0 else "?")
        return (
            f"{self.done}/{self.total} done ({self.cached} cached, {self.failed} failed), "
            f"{rate:.1f} requests/s, ETA {eta}"
        )

    def metadata(self) -> dict[str, int | float]:
        return {
            "requests": self.total,
            "requests_sent": self.sent,
            "cached_hits": self.cached,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
        }


class CachedBackend(TeacherBackend):
    def __init__(
        self,
        backend: TeacherBackend | Callable[[], TeacherBackend],
        cache: BatchedCache,
        teacher: str,
        report: Callable[[GenerationStats], None] | None = None,
    ):
        """`teacher` identifies what generates (backend, model, revision); it is part of every key.

        `backend` may be a function that builds it: then a run the cache answers in full never
        loads the model or opens a connection.
        """
        self._backend = backend if isinstance(backend, TeacherBackend) else None
        self._build = None if isinstance(backend, TeacherBackend) else backend
        self.cache, self.teacher, self.report = cache, teacher, report
        self.name = teacher
        self.stats = GenerationStats()

    @property
    def backend(self) -> TeacherBackend:
        if self._backend is None:
            self._backend = self._build()  # type: ignore[misc]
        return self._backend

    def complete(
        self,
        requests: Sequence[Request],
        params: SamplingParams,
        progress: Progress | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[Completion]:
        stats = self.stats = GenerationStats(total=len(requests))
        keys = [request_key(self.teacher, r.prompt, params, r.sample_index) for r in requests]
        hits = self.cache.get_many(keys)
        results: list[Completion | None] = [hits.get(k) for k in keys]
        stats.cached = sum(r is not None for r in results)
        misses = [i for i, r in enumerate(results) if r is None]
        stats.sent = len(misses)
        if on_completion:
            for i, r in enumerate(results):
                if r is not None:
                    on_completion(i, r)

        def store(j: int, completion: Completion) -> None:
            i = misses[j]
            self.cache.put(keys[i], self.teacher, completion)
            results[i] = completion
            if completion.ok:
                stats.answered += 1
            else:
                stats.failed += 1
            if on_completion:
                on_completion(i, completion)
            self._tick(progress)

        self._tick(progress)
        if misses:
            try:
                self.backend.complete([requests[i] for i in misses], params, on_completion=store)
            finally:
                self.cache.flush()  # what was answered is committed, even when the backend raised
        stats.finished = time.time()
        if self.report:
            self.report(stats)
        return results  # type: ignore[return-value]

    def _tick(self, progress: Progress | None) -> None:
        if progress:
            progress(self.stats.done, self.stats.total)
        if self.report:
            self.report(self.stats)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
