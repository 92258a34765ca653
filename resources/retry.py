"""The retry policy for HTTP teachers: which failures are retried, and how long to wait.

Exponential backoff with full jitter (a random wait in [0, base * 2**attempt], capped),
so many clients that failed together do not retry together. A server that says how long
to wait (429 or 503 with `Retry-After`) is obeyed instead.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# 408 request timeout, 409 conflict (some gateways), 425 too early, 429 rate limited, and
# every 5xx are transient by nature; other 4xx (bad key, bad request) would fail again.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # attempts after the first
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 300.0  # a server asking for longer than this is not waited for that long

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2**retry)
        return (rng or random).uniform(0.0, ceiling)


class RetryableError(Exception):
    """A failure worth retrying (connection error, timeout, 5xx, 429, malformed body)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix (a 4xx such as a bad API key or a bad request)."""
