"""The generation cache on Postgres, so that every pod of a Kubernetes run shares one cache.

On a cluster each step pod has its own scratch disk, so a SQLite cache there dies with its pod
and a rerun asks the teacher everything again. With `DISTILL_CACHE_URL` set to a Postgres URL
(resources/generation_cache.py's `open_generation_cache`), answers go to one table in that
database instead; the Dagster instance's database is the natural one. The table is created if
it is missing; rows are the same as SQLite's (key, teacher, the codec's bytes, time) and are
committed in batches by the writer thread of `resources.cache_writer`. Needs psycopg2 (the
`[deploy]` extra, which `make setup` installs).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

from resources.cache_writer import BatchedCache, Row

TABLE = "distill_generation_cache"
SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg2": "postgresql"}


def is_postgres_url(url: str) -> bool:
    """postgresql://, postgres:// or SQLAlchemy's postgresql+psycopg2:// (the form DAGSTER_POSTGRES_URL takes)."""
    return urlsplit(url).scheme in SCHEMES


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def import_psycopg2():
    try:
        import psycopg2
        import psycopg2.extras
    except ImportError as err:
        raise RuntimeError(
            f"the Postgres generation cache needs psycopg2: pip install -e '.[deploy]' ({err})"
        ) from None
    return psycopg2


class PostgresGenerationCache(BatchedCache):
    """The cache in one Postgres table; safe to share between threads, processes and machines."""

    def __init__(
        self,
        url: str,
        table: str | None = None,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        connect_timeout_s: int = 10,
    ):
        if not is_postgres_url(url):
            raise ValueError(f"{redact(url)}: not a postgresql:// URL")
        table = table or TABLE
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
            raise ValueError(f"table {table!r}: use lower-case letters, digits and _")
        super().__init__(f"{redact(url)} (table {table})", batch_size, flush_interval_s)
        self.table = table
        scheme = urlsplit(url).scheme
        self._dsn = SCHEMES[scheme] + url[len(scheme) :]  # libpq reads postgresql://, not SQLAlchemy's dialect form
        self._reader = self._connect(connect_timeout_s)
        self._reader.autocommit = True  # a lookup holds no transaction open between runs of the pipeline
        self._reader_lock = threading.Lock()
        self._create_table()
        self._writer_db = self._connect(connect_timeout_s)  # used by the writer thread alone
        self.start_writer()

    def _connect(self, timeout_s: int):
        psycopg2 = import_psycopg2()
        try:
            return psycopg2.connect(self._dsn, connect_timeout=timeout_s, application_name="distill generation cache")
        except psycopg2.OperationalError as err:
            raise RuntimeError(f"generation cache {self.where}: cannot connect ({str(err).strip()})") from None

    def _create_table(self) -> None:
        with self._reader.cursor() as cursor:
            # Two pods creating the table at once would collide in Postgres's catalog: one at a time.
            cursor.execute("BEGIN")
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, "
                "completion BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL)"
            )
            cursor.execute("COMMIT")

    def _read(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._reader_lock, self._reader.cursor() as cursor:
            for start in range(0, len(keys), 5000):
                cursor.execute(
                    f"SELECT key, completion FROM {self.table} WHERE key = ANY(%s)", (keys[start : start + 5000],)
                )
                found.update((key, bytes(data)) for key, data in cursor.fetchall())
        return found

    def _write(self, rows: list[Row]) -> None:
        psycopg2 = import_psycopg2()
        values = [(key, teacher, psycopg2.Binary(data), created) for key, teacher, data, created in rows]
        with self._writer_db, self._writer_db.cursor() as cursor:  # one transaction: committed, or rolled back
            psycopg2.extras.execute_values(
                cursor,
                f"INSERT INTO {self.table} (key, teacher, completion, created) VALUES %s ON CONFLICT (key) DO NOTHING",
                values,
                page_size=1000,
            )

    def _count(self) -> int:
        with self._reader_lock, self._reader.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {self.table}")
            return cursor.fetchone()[0]

    def _close_store(self) -> None:
        with self._reader_lock:
            self._reader.close()
        self._writer_db.close()
