"""The Dagster instance on Postgres (deploy/postgres/dagster.yaml); the project default stays SQLite.

`.ci/run` starts Debian's PostgreSQL on loopback (.ci/postgres.sh) and exports
DISTILL_TEST_POSTGRES_URL; without it the Postgres tests skip.
"""

import os
import shutil
import uuid

import dagster as dg
import pytest

from distill_assets.definitions import build_definitions
from tests.conftest import PROJECT_DIR

POSTGRES_URL = os.environ.get("DISTILL_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="DISTILL_TEST_POSTGRES_URL is not set: run .ci/postgres.sh (as root) and export the URL it prints",
)


def instance_home(tmp_path, config: str):
    home = tmp_path / f"dagster_home_{uuid.uuid4().hex[:6]}"
    home.mkdir()
    shutil.copyfile(PROJECT_DIR / config, home / "dagster.yaml")
    return home


def test_project_instance_defaults_to_sqlite(tmp_path):
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path, "dagster.yaml"))) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"


@needs_postgres
def test_runs_and_materializations_persist_in_postgres(tmp_path, spec_file, monkeypatch):
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", POSTGRES_URL)
    home = str(instance_home(tmp_path, "deploy/postgres/dagster.yaml"))
    defs = build_definitions(spec_file)
    with dg.DagsterInstance.from_config(home) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = dg.materialize(
            list(defs.assets),
            selection=[dg.AssetKey("curated_inputs"), dg.AssetKey("eval_set"), dg.AssetKey("dev_set")],
            partition_key="reverse",
            resources=dict(defs.resources),
            instance=instance,
        )
        assert result.success
        run_id = result.run_id
    # A second instance, as another process (the webserver, a k8s pod) would open it, sees the run.
    with dg.DagsterInstance.from_config(home) as instance:
        assert instance.get_run_by_id(run_id).is_success
        event = instance.get_latest_materialization_event(dg.AssetKey("curated_inputs"))
        assert event.run_id == run_id and event.asset_materialization.partition == "reverse"
        assert instance.get_materialized_partitions(dg.AssetKey("eval_set")) >= {"reverse"}


@needs_postgres
def test_gpu_pool_limit_is_read_from_the_postgres_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", POSTGRES_URL)
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path, "deploy/postgres/dagster.yaml"))) as instance:
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
