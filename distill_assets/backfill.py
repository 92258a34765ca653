"""Backfill exactly what is stale: `python -m distill_assets.backfill [--spec distill.yaml] [--dry-run]`.

Observes `teacher_spec` (each teacher's version, from the spec), asks Dagster which
partitions are stale or missing, and materializes those and everything downstream of
them, in dependency order, into the persistent instance ($DAGSTER_HOME). Prints each
partition it runs and why, and the teacher requests it sent: requests the generation
cache has already answered cost nothing.

After editing one teacher in distill.yaml, only that teacher's partitions (and the
training set, students, evaluations and report that depend on them) run again. Other
spec edits (students, evaluation settings, quality bounds) are not versioned: run
`python -m distill_assets.run` for those.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.data_version import DATA_VERSION_TAG, CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.observe import observe  # not exported at the top level in 1.13
from dagster._time import get_current_datetime

from distill_assets.assets.spec_assets import TEACHER_SPEC
from distill_assets.partitions import teacher_task_key
from distill_assets.spec import Spec

Steps = list[tuple[list[str], list[str | None]]]
GENERATION = dg.AssetKey("synthetic_completions")


def observe_teachers(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, str]:
    """Record each teacher's current version as an observation of teacher_spec; returns them."""
    source = next(a for a in defs.assets or [] if TEACHER_SPEC in a.keys)
    result = observe([source], instance=instance)
    return {
        e.partition: e.tags[DATA_VERSION_TAG]
        for e in (ev.event_specific_data.asset_observation for ev in result.all_events if ev.is_asset_observation)
    }


def stale_status_resolver(defs: dg.Definitions, instance: dg.DagsterInstance) -> CachingStaleStatusResolver:
    """Dagster's own staleness resolver, the one the UI uses, over these definitions."""
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return CachingStaleStatusResolver(instance, graph, view)


@dataclass
class StalePlan:
    steps: Steps  # what to materialize, in dependency order (the shape run.run_pipeline takes)
    why: dict[tuple[str, str | None], str] = field(default_factory=dict)  # (asset, partition) -> reason

    def partitions(self, asset: str) -> list[str | None]:
        return [p for keys, parts in self.steps if asset in keys for p in parts]

    def lines(self) -> list[str]:
        return [f"  {a}{f'[{p}]' if p else ''}: {why}" for (a, p), why in self.why.items()]

    def __len__(self) -> int:
        return sum(len(parts) for _, parts in self.steps)


def _reason(resolver: CachingStaleStatusResolver, key: dg.AssetKey, partition: str | None) -> str | None:
    status = resolver.get_status(key, partition)
    if status == StaleStatus.MISSING:
        return "missing"
    if status == StaleStatus.STALE:
        causes = resolver.get_stale_root_causes(key, partition) or resolver.get_stale_causes(key, partition)
        return "stale: " + "; ".join(
            f"{c.asset_key.to_user_string()}{f'[{c.partition_key}]' if c.partition_key else ''} {c.reason}"
            for c in causes
        )
    return None


def _routing_changed(defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """An unpartitioned asset whose set of upstream partitions shrank (a teacher or task removed):
    Dagster sees no new upstream data then, so the asset records the partitions it read."""
    event = instance.get_latest_materialization_event(key)
    recorded = event.asset_materialization.metadata.get("routed_partitions") if event else None
    if recorded is None:
        return None
    graph = defs.resolve_asset_graph()
    parent = dg.AssetKey("curated_completions")
    now = sorted(graph.get_parent_partition_keys_for_child(None, parent, key).partitions_subset.get_partition_keys())
    return None if list(recorded.value) == now else f"stale: routed partitions changed from {recorded.value} to {now}"


def plan_stale(defs: dg.Definitions, steps: Steps, instance: dg.DagsterInstance) -> StalePlan:
    """The steps of `steps` that are stale or missing, plus every step downstream of one of them."""
    graph = defs.resolve_asset_graph()
    resolver = stale_status_resolver(defs, instance)
    chosen: set[tuple[dg.AssetKey, str | None]] = set()
    plan = StalePlan(steps=[])

    def upstream_chosen(key: dg.AssetKey, partition: str | None) -> str | None:
        for parent in sorted(graph.get(key).parent_keys):
            if graph.get(parent).is_partitioned:
                parents = graph.get_parent_partition_keys_for_child(partition, parent, key)
                keys = list(parents.partitions_subset.get_partition_keys())
            else:
                keys = [None]
            for p in keys:
                if (parent, p) in chosen:
                    return f"downstream of {parent.to_user_string()}{f'[{p}]' if p else ''}"
        return None

    for names, partitions in steps:
        run = []
        for partition in partitions:
            keys = [dg.AssetKey(n) for n in names]
            why = next((r for k in keys if (r := _reason(resolver, k, partition))), None)
            if not why and partition is None:
                why = next((r for k in keys if (r := _routing_changed(defs, instance, k))), None)
            why = why or next((r for k in keys if (r := upstream_chosen(k, partition))), None)
            if why:
                run.append(partition)
                chosen.update((k, partition) for k in keys)
                plan.why[("+".join(names), partition)] = why
        if run:
            plan.steps.append((names, run))
    return plan


def changed_teacher_subset(graph, spec: Spec, teachers: list[str]) -> AssetGraphSubset:
    """The partitions a change of these teachers touches, and everything downstream (for the sensor)."""
    roots: set[AssetKeyPartitionKey] = set()
    routing = spec.routing()
    for teacher in teachers:
        for task in (t.name for t in spec.tasks):
            key = teacher_task_key(teacher, task)
            if routing.get(task) == teacher:
                roots.add(AssetKeyPartitionKey(GENERATION, key))
            roots.add(AssetKeyPartitionKey(dg.AssetKey("teacher_evaluation"), key))
    seen, todo = set(roots), list(roots)
    while todo:
        node = todo.pop()
        for child in graph.get(node.asset_key).child_keys:
            if graph.get(child).is_partitioned:
                parts = graph.get_child_partition_keys_of_parent(node.partition_key, node.asset_key, child)
            else:
                parts = [None]
            for p in parts:
                # Only generate the routed teacher x task partitions, as the headless run does.
                if child == GENERATION and (p is None or p not in {teacher_task_key(t, k) for k, t in routing.items()}):
                    continue
                item = AssetKeyPartitionKey(child, p)
                if item not in seen:
                    seen.add(item)
                    todo.append(item)
    return AssetGraphSubset.from_asset_partition_set(seen, graph)


def generation_counts(instance: dg.DagsterInstance, run_ids: set[str]) -> dict[str, dict[str, int]]:
    """partition -> requests_sent and cached_hits of the synthetic_completions materialized by these runs."""
    out: dict[str, dict[str, int]] = {}
    for record in instance.fetch_materializations(GENERATION, limit=1000).records:
        if record.run_id in run_ids:
            meta = record.asset_materialization.metadata
            out.setdefault(
                record.asset_materialization.partition,
                {k: int(meta[k].value) for k in ("requests_sent", "cached_hits") if k in meta},
            )
    return out


def backfill(defs: dg.Definitions, steps: Steps, instance: dg.DagsterInstance, echo=print, dry_run=False) -> dict:
    """Observe the teachers, plan the stale steps, run them; returns what it did."""
    from distill_assets.run import run_pipeline

    started = time.time()
    observe_teachers(defs, instance)
    plan = plan_stale(defs, steps, instance)
    if not len(plan):
        echo("nothing is stale: every partition is up to date with the spec")
        return {"partitions": 0, "requests_sent": 0, "cached_hits": 0, "seconds": time.time() - started}
    echo(f"{len(plan)} partition(s) to materialize:")
    for line in plan.lines():
        echo(line)
    if dry_run:
        return {"partitions": len(plan), "plan": plan}
    before = {r.dagster_run.run_id for r in instance.get_run_records()}
    run_pipeline(defs, plan.steps, instance, echo=echo, observe=False)
    runs = {r.dagster_run.run_id for r in instance.get_run_records()} - before
    counts = generation_counts(instance, runs)
    sent = sum(c.get("requests_sent", 0) for c in counts.values())
    cached = sum(c.get("cached_hits", 0) for c in counts.values())
    per_partition = ", ".join(f"{p}: {c.get('requests_sent', 0)}" for p, c in sorted(counts.items()))
    echo(f"teacher requests sent: {sent} ({cached} answered by the cache){f'; {per_partition}' if counts else ''}")
    return {
        "partitions": len(plan),
        "requests_sent": sent,
        "cached_hits": cached,
        "per_partition": counts,
        "plan": plan,
        "seconds": time.time() - started,
    }


def main() -> None:
    from distill_assets.run import instance_home, plan
    from distill_assets.spec import SpecError, default_spec_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=default_spec_path(), help="the pipeline spec (distill.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print what is stale and why; materialize nothing")
    args = parser.parse_args()
    os.environ["DISTILL_SPEC"] = str(args.spec.resolve())
    home = instance_home()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    from distill_assets.definitions import build_definitions

    try:
        defs = build_definitions(args.spec)
        steps = plan(args.spec)
    except SpecError as err:
        sys.exit(str(err))
    print(f"distill: backfilling what is stale in {args.spec} (Dagster instance at {home})", flush=True)
    with dg.DagsterInstance.get() as instance:
        done = backfill(defs, steps, instance, echo=lambda line: print(line, flush=True), dry_run=args.dry_run)
    if not args.dry_run:
        print(f"distill: backfill finished in {done['seconds']:.0f}s")


if __name__ == "__main__":
    main()
