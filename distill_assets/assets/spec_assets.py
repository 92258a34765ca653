"""Stage 0: the spec's teachers as an observable source, and the sensor that backfills on a change.

`teacher_spec[teacher]` is observed, not materialized: its data version per teacher is
the hash of that teacher's spec (distill.yaml, read again at every observation). The
teacher's `synthetic_completions` and `teacher_evaluation` partitions depend on it, so
editing one teacher makes only that teacher's partitions stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.definitions.external_asset import create_external_asset_from_source_asset

from distill_assets.partitions import Partitions
from distill_assets.spec import Spec, load_spec
from distill_assets.versions import teacher_versions

TEACHER_SPEC = dg.AssetKey("teacher_spec")


def current_teacher_versions(spec_path: Path, known: list[str]) -> dict[str, str]:
    """Versions from the spec file as it is on disk now, so a running `dagster dev` sees an edit
    without a reload; only for the teachers the loaded definitions have partitions for."""
    versions = teacher_versions(load_spec(spec_path))
    return {t: v for t, v in versions.items() if t in known}


def build(spec: Spec, partitions: Partitions, spec_path: Path) -> list:
    known = [t.name for t in spec.teachers]

    @dg.observable_source_asset(
        name="teacher_spec",
        description="Each teacher's spec (backend, model and revision, prompt template, sampling) as a version: "
        "observe it after editing distill.yaml to see which partitions are stale.",
        partitions_def=partitions.teacher,
        group_name="spec",
    )
    def teacher_spec() -> dg.DataVersionsByPartition:
        versions = current_teacher_versions(spec_path, known)
        return dg.DataVersionsByPartition({t: dg.DataVersion(v) for t, v in versions.items()})

    # As an AssetsDefinition, like every other asset here (what Dagster does with a SourceAsset anyway).
    return [create_external_asset_from_source_asset(teacher_spec)]


def observed_teacher_versions(instance: dg.DagsterInstance, teachers: list[str]) -> dict[str, str | None]:
    """The last observed version per teacher, None where it was never observed."""
    out: dict[str, str | None] = {}
    for teacher in teachers:
        record = instance.get_latest_data_version_record(TEACHER_SPEC, True, partition_key=teacher)
        event = record.asset_observation if record else None
        out[teacher] = event.tags.get(DATA_VERSION_TAG) if event and event.tags else None
    return out


def build_sensors(spec: Spec, spec_path: Path) -> list:
    from distill_assets.backfill import changed_teacher_subset  # the planner imports the asset graph

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
        subset = changed_teacher_subset(context.repository_def.asset_graph, spec, changed)
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
