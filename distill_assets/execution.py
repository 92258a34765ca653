"""How the command line materializes a partition: in this process, or side by side in worker processes.

On a machine without a GPU, torch's threads split one small model's operations poorly (and
stall when another process wants the cores): N one-thread processes, each materializing its
own partition of a step (one student each, one teacher x task each), get more done per second
than one process with N threads. Each worker loads the definitions once and materializes into
the same persistent Dagster instance, so runs, metadata and lineage are the same as in-process.

Assets that run a model sit in the `gpu` concurrency pool, which lets one step at a time hold
the accelerator. With no accelerator there is nothing to protect, so while the workers run the
pool's limit is raised to their number, and put back afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

MODEL_POOL = "gpu"


def quiet_progress_bars() -> None:
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def materialize(
    defs: dg.Definitions, instance: dg.DagsterInstance, names: list[str], partition: str | None, log_level: str
) -> str | None:
    """Materialize one step's assets (and the checks that guard them) for one partition; why it failed, or None."""
    result = dg.materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        selection=[dg.AssetKey(k) for k in names],
        partition_key=partition,
        resources=dict(defs.resources or {}),
        instance=instance,
        # The run log keeps every event; the console shows the assets' own progress lines.
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    )
    if result.success:
        return None
    failed = [
        f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
    ]
    because = f"; blocking check(s) failed: {', '.join(failed)}" if failed else ""
    return f"run {result.run_id}{because}"


def default_workers() -> int:
    """One per core on a CPU-only machine; one with a GPU (the pool gives it to one step at a time).

    Not more than the cores: with three one-thread workers on two cores (measured on the demo),
    the two small students shared the cores with the large one and then left a core idle while
    it finished alone: 385 s for the pipeline, against 316 s with two.
    """
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


# What a worker process keeps between the partitions it is given.
_worker: dict = {}


def _start_worker(spec_path: str, threads: int, log_level: str) -> None:
    import torch

    from distill_assets.definitions import build_definitions

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    torch.set_num_threads(threads)
    quiet_progress_bars()
    _worker.update(defs=build_definitions(spec_path), log_level=log_level)


def _ready() -> int:
    return os.getpid()


def _materialize_in_worker(names: list[str], partition: str | None) -> tuple[float, str | None]:
    started = time.time()
    with dg.DagsterInstance.get() as instance:  # $DAGSTER_HOME, inherited from the parent
        error = materialize(_worker["defs"], instance, names, partition, _worker["log_level"])
    return time.time() - started, error


class Workers:
    """A pool of one-thread worker processes that materialize partitions into the instance at $DAGSTER_HOME."""

    def __init__(self, spec_path: Path, workers: int, log_level: str = "INFO"):
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.workers = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of a process holding torch threads
            initializer=_start_worker,
            initargs=(str(spec_path), threads, log_level),
        )
        # Start them now: their imports overlap with the first steps, which run in this process.
        self._warming = [self.pool.submit(_ready) for _ in range(workers)]

    def materialize(
        self, names: list[str], partitions: list[str | None]
    ) -> Iterator[tuple[str | None, float, str | None]]:
        """(partition, seconds, error) for each partition, as each finishes."""
        futures: dict[Future, str | None] = {self.pool.submit(_materialize_in_worker, names, p): p for p in partitions}
        for future in as_completed(futures):
            seconds, error = future.result()
            yield futures[future], seconds, error

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def pool_slots(instance: dg.DagsterInstance, pool: str, slots: int) -> Iterator[None]:
    """The concurrency pool's limit set to `slots` for the duration, then put back as it was."""
    storage = instance.event_log_storage
    before = next((p for p in storage.get_pool_limits() if p.name == pool), None)
    storage.set_concurrency_slots(pool, slots)
    try:
        yield
    finally:
        if before is None or before.from_default:
            storage.delete_concurrency_limit(pool)
        else:
            storage.set_concurrency_slots(pool, before.limit)
