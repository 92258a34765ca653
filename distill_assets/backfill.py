"""Backfill exactly what is stale: `python -m distill_assets.backfill [--spec distill.yaml] [--dry-run]`.

Observes the spec's versions (teachers, tasks, students, evaluation settings), asks Dagster which
partitions are stale or missing, and materializes those and everything downstream of
them, in dependency order, into the persistent instance ($DAGSTER_HOME). Prints each
partition it runs and why, and the teacher requests it sent: requests the generation
cache has already answered cost nothing. `--dry-run` prints the plan and runs nothing.

After editing one teacher in distill.yaml, only that teacher's partitions (and the
training set, students, evaluations and report that depend on them) run again; after
editing one student, only its checkpoint and what follows. `python -m distill_assets.run`
does the same without `--dry-run`; `--force` there recomputes everything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from distill_assets.assets.routing_assets import current_routing
from distill_assets.execution import Workers, default_workers, quiet_progress_bars
from distill_assets.routing import Routing
from distill_assets.run import (
    instance_home,
    load,
    plan,
    run_ids,
    run_pipeline,
    store_of,
    teacher_requests,
    worker_processes,
)
from distill_assets.spec import default_spec_path
from distill_assets.staleness import Steps, observe_spec, plan_stale


def backfill(
    defs: dg.Definitions,
    steps: Steps,
    instance: dg.DagsterInstance,
    echo=print,
    dry_run: bool = False,
    routing: Callable[[], Routing] | None = None,
    workers: Workers | None = None,
) -> dict:
    """Observe the teachers, then materialize (or with `dry_run` only list) what is stale; returns what it did."""
    started = time.time()
    observe_spec(defs, instance)
    if dry_run:
        plan = plan_stale(defs, steps, instance, routing)
        echo(f"{len(plan)} partition(s) to materialize:" if len(plan) else "nothing is stale")
        for line in plan.lines():
            echo(line)
        return {"partitions": len(plan), "plan": plan}
    before = run_ids(instance)
    done = run_pipeline(
        defs, steps, instance, echo=echo, observe=False, only_stale=True, routing=routing, workers=workers
    )
    if not len(done):
        echo("nothing is stale: every partition is up to date with the spec")
    requests = teacher_requests(instance, run_ids(instance) - before)
    sent = sum(r.get("requests_sent", 0) for r in requests.values())
    cached = sum(r.get("cached_hits", 0) for r in requests.values())
    asked = ", ".join(f"{k}: {r['requests_sent']}" for k, r in sorted(requests.items()) if r.get("requests_sent"))
    echo(f"teacher requests sent: {sent} ({cached} answered by the cache){f'; {asked}' if asked else ''}")
    return {
        "partitions": len(done),
        "requests_sent": sent,
        "cached_hits": cached,
        "per_partition": requests,
        "plan": done,
        "seconds": time.time() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=default_spec_path(), help="the pipeline spec (distill.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print what is stale and why; materialize nothing")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="partitions of a step side by side (see run --help)"
    )
    args = parser.parse_args()
    home = instance_home()
    quiet_progress_bars()
    spec, defs = load(args.spec)
    steps = plan(args.spec, defs=defs)
    print(f"distill: backfilling what is stale in {args.spec} (Dagster instance at {home})", flush=True)
    with dg.DagsterInstance.get() as instance:
        echo = lambda line: print(line, flush=True)  # noqa: E731
        routing = lambda: current_routing(spec, store_of(spec))  # noqa: E731
        with worker_processes(args.spec, instance, 1 if args.dry_run else args.workers) as workers:
            done = backfill(defs, steps, instance, echo=echo, dry_run=args.dry_run, routing=routing, workers=workers)
    if not args.dry_run:
        print(f"distill: backfill finished in {done['seconds']:.0f}s")


if __name__ == "__main__":
    main()
