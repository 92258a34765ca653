"""The synthetic_completions asset with an OpenAI-compatible teacher: metadata counts and a cached rerun."""

from __future__ import annotations

import dagster as dg
import polars as pl
import yaml

from distill_assets.definitions import build_definitions
from distill_assets.partitions import teacher_task_key
from distill_assets.spec import load_spec
from tests.openai_server import FakeTeacher, OpenAIServer


def materialize(defs, instance, keys: list[str], partition: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets or []),
        selection=[dg.AssetKey(k) for k in keys],
        partition_key=partition,
        resources=dict(defs.resources or {}),
        instance=instance,
    )


def metadata(instance, partition: str) -> dict:
    records = instance.fetch_materializations(dg.AssetKey("synthetic_completions"), limit=10).records
    latest = next(r for r in records if r.asset_materialization.partition == partition)
    return {k: v.value for k, v in latest.asset_materialization.metadata.items()}


def test_http_teacher_partition_records_counts_and_reruns_from_cache(spec_file):
    fake = FakeTeacher(fault_rate=0.2, faults=("500", "429", "malformed"), seed=2)
    with OpenAIServer(fake) as server:
        data = yaml.safe_load(spec_file.read_text())
        data["teachers"][1] |= {"backend": "openai", "model": "served-teacher", "base_urls": [server.url]}
        spec_file.write_text(yaml.safe_dump(data))
        defs = build_definitions(spec_file)
        key = teacher_task_key("teacher_b", "reverse")
        with dg.DagsterInstance.ephemeral() as instance:
            materialize(defs, instance, ["curated_inputs", "eval_set", "dev_set"], "reverse")
            materialize(defs, instance, ["synthetic_completions"], key)
            first = metadata(instance, key)
            sent = fake.requests.total()
            materialize(defs, instance, ["synthetic_completions"], key)
            second = metadata(instance, key)
        assert first["requests"] == 12 and first["requests_sent"] == 12 and first["failed"] == 0
        assert first["cached_hits"] == 0 and sent > 12  # faults were retried
        assert second["requests_sent"] == 0 and second["cached_hits"] == 12
        assert fake.requests.total() == sent
    root = load_spec(spec_file).storage_path()
    frame = pl.read_parquet(root / f"frames/synthetic_completions/{key.replace('|', '__')}.parquet")
    assert (frame["completion"] == frame["prompt"].str.reverse().str.slice(0, 4)).all()
    assert (root / "cache/generations.sqlite").exists()
