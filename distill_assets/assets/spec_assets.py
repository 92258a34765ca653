"""Stage 0: the spec's parts as observable sources, and the sensor that backfills on a teacher change.

`teacher_spec[teacher]`, `task_spec[task]`, `student_spec[student]` and `evaluation_spec` are
observed, not materialized: their data versions are hashes of those parts of the spec (see
distill_assets/staleness.py), so an edit makes stale exactly what depends on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from distill_assets.partitions import Partitions
from distill_assets.routing import Routing
from distill_assets.spec import Spec
from distill_assets.staleness import (
    DATA_VERSION_TAG,
    SPEC_SOURCES,
    TEACHER_SPEC,
    SpecSource,
    changed_teacher_subset,
    current_teacher_versions,
    observed_teacher_versions,
)


def build(spec: Spec, partitions: Partitions, spec_path: Path) -> list:
    return [spec_source(source, partitions, spec_path) for source in SPEC_SOURCES]


def spec_source(source: SpecSource, partitions: Partitions, spec_path: Path) -> dg.SourceAsset:
    """An observable source whose data versions are the spec part's versions, read from the file when observed."""
    partitions_def = getattr(partitions, source.partitions) if source.partitions else None
    known = partitions_def.get_partition_keys() if partitions_def else None

    @dg.observable_source_asset(
        name=source.key.to_user_string(),
        description=source.description,
        partitions_def=partitions_def,
        group_name="spec",
    )
    def observe() -> dg.DataVersionsByPartition | dg.DataVersion:
        versions = source.current(spec_path, known)
        if isinstance(versions, str):
            return dg.DataVersion(versions)
        return dg.DataVersionsByPartition({k: dg.DataVersion(v) for k, v in versions.items()})

    return observe


def build_sensors(spec: Spec, spec_path: Path, routing: Callable[[], Routing]) -> list:
    """`routing` gives the routing in force when the sensor ticks (the routing table's, once there is one)."""

    @dg.sensor(
        description="Observes teacher_spec every minute; when a teacher's version changes, launches a backfill of "
        "that teacher's partitions and everything downstream. Off by default: start it in the UI.",
        default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=60,
        asset_selection=dg.AssetSelection.all() - dg.AssetSelection.keys(*(source.key for source in SPEC_SOURCES)),
    )
    def teacher_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        current = current_teacher_versions(spec_path, [t.name for t in spec.teachers])
        observed = observed_teacher_versions(context.instance, sorted(current))
        changed = sorted(t for t, v in current.items() if observed[t] is not None and observed[t] != v)
        launched = json.loads(context.cursor) if context.cursor else {}
        changed = [t for t in changed if launched.get(t) != current[t]]
        if not changed:
            return dg.SkipReason("no teacher's spec changed since it was last observed")
        subset = changed_teacher_subset(context.repository_def.asset_graph, spec, changed, routing())
        context.update_cursor(json.dumps({**launched, **{t: current[t] for t in changed}}))
        return dg.SensorResult(
            asset_events=[
                dg.AssetObservation(TEACHER_SPEC, partition=t, tags={DATA_VERSION_TAG: current[t]}) for t in changed
            ],
            run_requests=[
                dg.RunRequest.for_asset_graph_subset(subset, tags={"distill/changed_teachers": ",".join(changed)})
            ],
        )

    return [teacher_change_sensor]
