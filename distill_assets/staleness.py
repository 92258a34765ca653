"""Staleness: the spec's parts as versioned observations, and which partitions are stale because of them.

`teacher_spec[teacher]` is an observable source asset whose data version per teacher is the
hash of that teacher's spec (distill.yaml, read again at every observation). A teacher's
`synthetic_completions` and `teacher_evaluation` partitions depend on it, so editing one
teacher makes only that teacher's partitions stale. `task_spec[task]` (the task's block,
quality bounds and input files), `student_spec[student]` and `evaluation_spec` do the same
for the inputs, the checkpoints and the evaluations. This module is what the assets (the
sensor), the headless run and the backfill share: it sits below all of them.

Staleness is Dagster's own, the resolver the UI uses. Dagster 1.13 exports no public name for
it, nor for an observation's data-version tag or an asset-graph subset; the few private imports
below are those, each with the reason beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

# No public API in 1.13 for per-partition staleness: the UI's resolver and its loading context.
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext

# RunRequest.for_asset_graph_subset (public) takes this class, which has no public constructor module.
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

# The tag an observation's data version travels in, and the staleness resolver (no public names).
from dagster._core.definitions.data_version import DATA_VERSION_TAG, CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey  # the element type of AssetGraphSubset
from dagster._time import get_current_datetime  # the clock Dagster's own temporal context uses

from distill_assets.keys import teacher_task_key
from distill_assets.partitions import is_routed
from distill_assets.routing import Routing
from distill_assets.spec import Spec, load_spec
from distill_assets.versions import evaluation_version, student_versions, task_versions, teacher_versions

__all__ = [
    "DATA_VERSION_TAG",
    "SPEC_SOURCES",
    "TEACHER_SPEC",
    "SpecSource",
    "StalePlan",
    "StaleStatus",
    "StaleTracker",
    "changed_teacher_subset",
    "current_teacher_versions",
    "observe_spec",
    "observed_teacher_versions",
    "plan_stale",
    "stale_status_resolver",
]


@dataclass(frozen=True)
class SpecSource:
    """One part of the spec observed as an asset: its versions, per partition or (unpartitioned) one."""

    key: dg.AssetKey
    partitions: str | None  # the Partitions attribute it is partitioned by
    versions: Callable[[Spec], dict[str, str] | str]
    description: str

    def current(self, spec_path: Path, known: list[str] | None = None) -> dict[str, str] | str:
        """Versions from the spec file as it is on disk now, so a running `dagster dev` sees an edit
        without a reload; only for the partitions the loaded definitions know."""
        versions = self.versions(load_spec(spec_path))
        return versions if isinstance(versions, str) else {k: v for k, v in versions.items() if k in (known or [])}


TEACHER_SPEC = dg.AssetKey("teacher_spec")
SPEC_SOURCES = (
    SpecSource(
        TEACHER_SPEC,
        "teacher",
        teacher_versions,
        "Each teacher's spec (backend, model and revision, prompt template, sampling) as a version: "
        "observe it after editing distill.yaml to see which partitions are stale.",
    ),
    SpecSource(
        dg.AssetKey("task_spec"),
        "task",
        task_versions,
        "Each task's spec block, quality bounds and input files as a version: an edit makes its inputs stale.",
    ),
    SpecSource(
        dg.AssetKey("student_spec"),
        "student",
        student_versions,
        "Each student's spec (base, method, training, LoRA) as a version: an edit makes its checkpoint stale.",
    ),
    SpecSource(
        dg.AssetKey("evaluation_spec"),
        None,
        evaluation_version,
        "The evaluation settings as a version: an edit makes the evaluations stale.",
    ),
)
GENERATION = dg.AssetKey("synthetic_completions")

Partitions = list[str | None] | Callable[[], list[str | None]]
Steps = list[tuple[list[str], Partitions]]


def current_teacher_versions(spec_path: Path, known: list[str]) -> dict[str, str]:
    """The teachers' versions from the spec file as it is on disk now (see SpecSource.current)."""
    return next(s for s in SPEC_SOURCES if s.key == TEACHER_SPEC).current(spec_path, known)


def observed_teacher_versions(instance: dg.DagsterInstance, teachers: list[str]) -> dict[str, str | None]:
    """The last observed version per teacher, None where it was never observed."""
    out: dict[str, str | None] = {}
    for teacher in teachers:
        record = instance.get_latest_data_version_record(TEACHER_SPEC, True, partition_key=teacher)
        event = record.asset_observation if record else None
        out[teacher] = event.tags.get(DATA_VERSION_TAG) if event and event.tags else None
    return out


def observe_spec(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Record the spec's current versions as observations of its sources (what the UI's *Observe* does)."""
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    for source in SPEC_SOURCES:  # one job each: a job's assets share one partitions definition
        job = dg.define_asset_job(f"observe_{source.key.to_python_identifier()}", selection=[source.key])
        job_def = dg.Definitions(assets=[defs.resolve_assets_def(source.key)], jobs=[job]).resolve_job_def(job.name)
        job_def.execute_in_process(instance=instance, run_config=quiet)


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
    """What a run materialized (or a dry run would), step by step, and why."""

    steps: list[tuple[list[str], list[str | None]]] = field(default_factory=list)
    why: dict[tuple[str, str | None], str] = field(default_factory=dict)  # (asset, partition) -> reason
    skipped: dict[str, list[str | None]] = field(default_factory=dict)  # step label -> partitions up to date

    def add(self, names: list[str], partition: str | None, why: str) -> None:
        if not self.steps or self.steps[-1][0] != names:
            self.steps.append((names, []))
        self.steps[-1][1].append(partition)
        self.why[("+".join(names), partition)] = why

    def partitions(self, asset: str) -> list[str | None]:
        return [p for keys, parts in self.steps if asset in keys for p in parts]

    def lines(self) -> list[str]:
        return [f"  {a}{f'[{p}]' if p else ''}: {why}" for (a, p), why in self.why.items()]

    def __len__(self) -> int:
        return sum(len(parts) for _, parts in self.steps)


class StaleTracker:
    """Why a partition must be materialized (missing, stale, or downstream of one chosen), or None.

    `refresh()` after materializing reads the instance again: a step then sees the data versions
    its upstream steps just wrote.
    """

    def __init__(
        self, defs: dg.Definitions, instance: dg.DagsterInstance, routing: Callable[[], Routing] | None = None
    ):
        self.defs, self.instance, self.routing = defs, instance, routing
        self.graph = defs.resolve_asset_graph()
        self.chosen: set[tuple[dg.AssetKey, str | None]] = set()
        self.refresh()

    def refresh(self) -> None:
        self.resolver = stale_status_resolver(self.defs, self.instance)

    def reason(self, names: list[str], partition: str | None) -> str | None:
        keys = [dg.AssetKey(n) for n in names]
        checks = (self._status, self._routed_partitions_changed, self._upstream_chosen)
        return next((why for check in checks for key in keys if (why := check(key, partition))), None)

    def choose(self, names: list[str], partition: str | None) -> None:
        self.chosen.update((dg.AssetKey(n), partition) for n in names)

    def _status(self, key: dg.AssetKey, partition: str | None) -> str | None:
        status = self.resolver.get_status(key, partition)
        if status == StaleStatus.MISSING:
            return "missing"
        if status != StaleStatus.STALE:
            return None
        causes = self.resolver.get_stale_root_causes(key, partition) or self.resolver.get_stale_causes(key, partition)
        return "stale: " + "; ".join(f"{_label(c.asset_key, c.partition_key)} {c.reason}" for c in causes)

    def _routed_partitions_changed(self, key: dg.AssetKey, partition: str | None) -> str | None:
        """An unpartitioned asset whose routed upstream partitions changed (a teacher or task removed, or
        routed elsewhere): Dagster sees no new upstream data then, so the asset records the partitions it read."""
        if partition is not None or self.routing is None:
            return None
        event = self.instance.get_latest_materialization_event(key)
        recorded = event.asset_materialization.metadata.get("routed_partitions") if event else None
        now = self.routing().partition_keys()
        if recorded is None or list(recorded.value) == now:
            return None
        return f"stale: routed partitions changed from {recorded.value} to {now}"

    def _upstream_chosen(self, key: dg.AssetKey, partition: str | None) -> str | None:
        for parent in sorted(self.graph.get(key).parent_keys):
            if self.graph.get(parent).is_partitioned:
                parents = self.graph.get_parent_partition_keys_for_child(partition, parent, key)
                keys: Iterable[str | None] = parents.partitions_subset.get_partition_keys()
            else:
                keys = [None]
            for p in keys:
                if (parent, p) in self.chosen:
                    return f"downstream of {_label(parent, p)}"
        return None


def _label(key: dg.AssetKey, partition: str | None) -> str:
    return key.to_user_string() + (f"[{partition}]" if partition else "")


def plan_stale(
    defs: dg.Definitions, steps: Steps, instance: dg.DagsterInstance, routing: Callable[[], Routing] | None = None
) -> StalePlan:
    """The partitions of `steps` that are stale or missing, plus every one downstream of them, without
    materializing anything (a dry run: routed partitions come from the routing table as it is now)."""
    tracker = StaleTracker(defs, instance, routing)
    plan = StalePlan()
    for names, partitions in steps:
        for partition in partitions() if callable(partitions) else partitions:
            if why := tracker.reason(names, partition):
                tracker.choose(names, partition)
                plan.add(names, partition, why)
    return plan


def changed_teacher_subset(graph, spec: Spec, teachers: list[str], routing: Routing) -> AssetGraphSubset:
    """The partitions a change of these teachers touches, and everything downstream (for the sensor)."""
    routed = set(routing.partition_keys())
    roots: set[AssetKeyPartitionKey] = set()
    for teacher in teachers:
        for task in (t.name for t in spec.tasks):
            key = teacher_task_key(teacher, task)
            if key in routed:
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
                # Only the routed teacher x task partitions of a routed asset, as the headless run does.
                if is_routed(graph.get(child).tags) and p not in routed:
                    continue
                item = AssetKeyPartitionKey(child, p)
                if item not in seen:
                    seen.add(item)
                    todo.append(item)
    return AssetGraphSubset.from_asset_partition_set(seen, graph)
