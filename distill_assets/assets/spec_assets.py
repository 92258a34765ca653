"""Stage 0: the spec's teachers as an observable source, and the sensor that backfills on a change.

`teacher_spec[teacher]` is observed, not materialized: its data version per teacher is the
hash of that teacher's spec (see distill_assets/staleness.py).
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
    TEACHER_SPEC,
    changed_teacher_subset,
    current_teacher_versions,
    observed_teacher_versions,
)


def build(spec: Spec, partitions: Partitions, spec_path: Path) -> list:
    known = [t.name for t in spec.teachers]

    @dg.observable_source_asset(
        name=TEACHER_SPEC.to_user_string(),
        description="Each teacher's spec (backend, model and revision, prompt template, sampling) as a version: "
        "observe it after editing distill.yaml to see which partitions are stale.",
        partitions_def=partitions.teacher,
        group_name="spec",
    )
    def teacher_spec() -> dg.DataVersionsByPartition:
        versions = current_teacher_versions(spec_path, known)
        return dg.DataVersionsByPartition({t: dg.DataVersion(v) for t, v in versions.items()})

    return [teacher_spec]


def build_sensors(spec: Spec, spec_path: Path, routing: Callable[[], Routing]) -> list:
    """`routing` gives the routing in force when the sensor ticks (the routing table's, once there is one)."""

    @dg.sensor(
        description="Observes teacher_spec every minute; when a teacher's version changes, launches a backfill of "
        "that teacher's partitions and everything downstream. Off by default: start it in the UI.",
        default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=60,
        asset_selection=dg.AssetSelection.all() - dg.AssetSelection.keys(TEACHER_SPEC),
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
