"""The write path every generation cache store shares: `put` queues, a writer thread commits batches.

A teacher backend reports each answer from its event loop or generation loop; `put` only
files the answer in a queue and returns, so no encoding and no database write ever runs on
the caller's thread. A writer thread takes what is queued when `batch_size` answers wait or
`flush_interval_s` has passed, encodes them (`resources.completion_codec`) and commits them in
one transaction. `get_many` sees answers still queued, `flush` waits until everything queued
is committed, and `close` flushes first. A process killed with kill -9 loses only the answers
not committed yet (at most one interval's worth); those are sent to the teacher again next run.

A store (SQLite, Postgres) subclasses `BatchedCache` with its reads, its batched insert that
keeps the first answer of a key, its row count and its close.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable

from resources.backends import Completion
from resources.completion_codec import decode_completion, encode_completion

Row = tuple[str, str, bytes, float]  # key, teacher, encoded completion, seconds since the epoch


class CacheWriteError(RuntimeError):
    """The writer thread could not commit a batch; the answers it held are sent again next run."""


class BatchedCache(ABC):
    """Completions keyed by `request_key`; `put` never blocks on the store. Safe to share between threads."""

    def __init__(self, where: str, batch_size: int = 256, flush_interval_s: float = 0.2):
        self.where = where  # named in errors: a file path, or a URL without its password
        self.batch_size, self.flush_interval_s = batch_size, flush_interval_s
        self._queued: dict[str, tuple[str, Completion]] = {}  # key -> (teacher, completion), not taken yet
        self._writing: dict[str, tuple[str, Completion]] = {}  # the batch being committed
        self._wake = threading.Condition()
        self._flushes = 0  # flush requests; the writer takes the queue at once when it has not served them all
        self._served = 0
        self._closing = False
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None

    def start_writer(self) -> None:
        """Starts the writer thread; a subclass calls it once its store is open."""
        self._writer = threading.Thread(target=self._write_loop, name=f"cache writer {self.where}", daemon=True)
        self._writer.start()
        _OPEN.add(self)

    @abstractmethod
    def _read(self, keys: list[str]) -> dict[str, bytes]:
        """Stored bytes of the keys found, from the store itself."""

    @abstractmethod
    def _write(self, rows: list[Row]) -> None:
        """Inserts the rows in one transaction; a key already stored keeps its first answer."""

    @abstractmethod
    def _count(self) -> int:
        """Rows in the store."""

    @abstractmethod
    def _close_store(self) -> None:
        """Closes the store's connections."""

    def put(self, key: str, teacher: str, completion: Completion) -> None:
        """Queues an answer for the writer thread; a failed completion is never stored."""
        if not completion.ok:
            return
        with self._wake:
            self._raise_if_broken()
            if self._closing:
                raise RuntimeError(f"generation cache {self.where} is closed")
            if key in self._queued or key in self._writing:
                return
            self._queued[key] = (teacher, completion)
            if len(self._queued) >= self.batch_size:
                self._wake.notify_all()

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """The answers stored or still queued, as the store gives them back (through the codec)."""
        keys = list(dict.fromkeys(keys))
        with self._wake:
            pending = {k: self._queued.get(k) or self._writing.get(k) for k in keys}
        found = {k: decode_completion(encode_completion(v[1])) for k, v in pending.items() if v is not None}
        rest = [k for k in keys if k not in found]
        found.update((key, decode_completion(data)) for key, data in self._read(rest).items())
        return found

    def flush(self) -> None:
        """Returns once every answer queued before the call is committed; raises if the writer failed."""
        with self._wake:
            self._flushes += 1
            ticket = self._flushes
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._served >= ticket or self._error is not None or not self._writing_on())
            self._raise_if_broken()

    def _writing_on(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    def __len__(self) -> int:
        self.flush()
        return self._count()

    def close(self) -> None:
        """Commits what is queued, stops the writer thread and closes the store. Safe to call twice."""
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify_all()
        if self._writer is not None:
            self._writer.join()
        self._close_store()
        _OPEN.discard(self)
        self._raise_if_broken()

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            lost = len(self._queued) + len(self._writing)
            raise CacheWriteError(
                f"generation cache {self.where}: writing failed ({type(self._error).__name__}: {self._error}); "
                f"{lost} answers were not stored and will be asked again next run"
            ) from self._error

    def _take_batch(self) -> tuple[list[tuple[str, str, Completion]], int, bool]:
        """Waits for a batch (full, an interval passed, a flush or close); (batch, flushes served, stop)."""
        with self._wake:
            self._wake.wait_for(
                lambda: self._closing or self._served < self._flushes or len(self._queued) >= self.batch_size,
                timeout=self.flush_interval_s,
            )
            self._writing, self._queued = self._queued, {}
            batch = [(key, teacher, completion) for key, (teacher, completion) in self._writing.items()]
            return batch, self._flushes, self._closing

    def _write_loop(self) -> None:
        while True:
            batch, flushes, stop = self._take_batch()
            try:
                if batch:
                    now = time.time()
                    self._write([(key, teacher, encode_completion(c), now) for key, teacher, c in batch])
            except Exception as err:  # kept, and raised to the caller by put, flush or close
                with self._wake:
                    self._error = err
                    self._wake.notify_all()
                return
            with self._wake:
                self._writing = {}
                self._served = max(self._served, flushes)
                self._wake.notify_all()
                if stop and not self._queued:
                    return


_OPEN: weakref.WeakSet[BatchedCache] = weakref.WeakSet()  # caches whose writer runs


@atexit.register
def _close_at_exit() -> None:
    """A program that ends without close() still commits what it queued (atexit runs before daemon threads stop)."""
    for cache in list(_OPEN):
        try:
            cache.close()
        except CacheWriteError as err:
            print(f"warning: {err}", file=sys.stderr)
