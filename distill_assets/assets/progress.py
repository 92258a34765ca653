"""Progress lines for long work, written to the Dagster run log."""

from __future__ import annotations

import time

import dagster as dg

from resources.cached_backend import GenerationStats


def progress_logger(context: dg.AssetExecutionContext, what: str, every_seconds: float = 10.0):
    """A (done, total) callback that logs rate and ETA at most every `every_seconds`."""
    started = time.time()
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.time()
        if done < total and now - last[0] < every_seconds:
            return
        last[0] = now
        elapsed = max(now - started, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate else float("inf")
        context.log.info(f"{what}: {done}/{total} ({rate:.1f}/s, ETA {eta:.0f}s)")

    return report


def generation_logger(context: dg.AssetExecutionContext, what: str, every_seconds: float = 10.0):
    """A GenerationStats callback: done, cached, failed, requests/s and ETA, at most every `every_seconds`."""
    last = [0.0]

    def report(stats: GenerationStats) -> None:
        now = time.time()
        finished = stats.done >= stats.total
        if not finished and now - last[0] < every_seconds:
            return
        if finished and last[0] < 0:  # the final line is logged once
            return
        last[0] = -1.0 if finished else now
        context.log.info(f"{what}: {stats.line()}")

    return report
