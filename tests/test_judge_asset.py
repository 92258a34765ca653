"""The LLM judge inside curated_completions: its requests go through the generation cache, its failures are counted.

The teacher and the judge are one OpenAI-compatible server on loopback that reverses prompts
as the teacher and answers "Score: 9" as the judge; it can fail every attempt at some judge
requests.
"""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
import yaml

from distill_assets.definitions import build_definitions
from distill_assets.partitions import teacher_task_key
from distill_assets.spec import load_spec
from tests.openai_server import OpenAIServer, TeacherAndJudge

KEY = teacher_task_key("teacher_b", "reverse")


def write_spec(spec_file, url: str, **judge) -> None:
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][1] |= {"backend": "openai", "model": "served", "base_urls": [url], "max_retries": 0}
    task = next(t for t in data["tasks"] if t["name"] == "reverse")
    task["judge"] = {"teacher": "teacher_b", "threshold": 5, **judge}
    spec_file.write_text(yaml.safe_dump(data))


def curate(spec_file, instance) -> tuple[dg.ExecuteInProcessResult, dict]:
    defs = build_definitions(spec_file)
    result = dg.materialize(
        list(defs.assets), selection=[dg.AssetKey("curated_completions")], partition_key=KEY,
        resources=dict(defs.resources), instance=instance, raise_on_error=False,
    )  # fmt: skip
    event = instance.get_latest_materialization_event(dg.AssetKey("curated_completions"))
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()} if event else {}
    return result, metadata


@pytest.fixture
def judged_run(spec_file):
    """A spec whose reverse task is judged by the served teacher_b, its inputs and completions materialized."""
    fake = TeacherAndJudge(score=9, fail_every=3)
    with OpenAIServer(fake) as server, dg.DagsterInstance.ephemeral() as instance:
        write_spec(spec_file, server.url)
        defs = build_definitions(spec_file)
        for keys, partition in (
            (["curated_inputs", "eval_set", "dev_set"], "reverse"),
            (["synthetic_completions"], KEY),
        ):
            assert dg.materialize(
                list(defs.assets), selection=[dg.AssetKey(k) for k in keys], partition_key=partition,
                resources=dict(defs.resources), instance=instance,
            ).success  # fmt: skip
        yield fake, server, instance


def test_judge_failures_are_counted_and_its_answers_never_asked_again(spec_file, judged_run):
    fake, server, instance = judged_run

    result, _ = curate(spec_file, instance)  # the default: no row may go unjudged
    assert not result.success
    cause = result.get_step_failure_events()[0].event_specific_data.error.cause
    assert cause.cls_name == "JudgeFailed" and "judge requests failed after their retries" in cause.message
    failed = sum(1 for prompt in fake.requests if fake.fails(prompt))
    asked = sum(1 for prompt in fake.requests if fake.judged(prompt))
    assert 0 < failed < asked

    write_spec(spec_file, server.url, max_failed_fraction=0.9)
    result, first = curate(spec_file, instance)
    assert result.success
    assert first["judge/requests"] == asked and first["judge/cached_hits"] == asked - failed
    assert first["judge/requests_sent"] == first["judge/failed"] == first["judge_failed"] == failed
    assert first["dropped/judge"] == 0  # a failed request drops nothing: its row is kept unjudged
    frame = pl.read_parquet(
        load_spec(spec_file).storage_path() / f"frames/curated_completions/{KEY.replace('|', '__')}.parquet"
    )
    unjudged = frame.filter(pl.col("judge_error").is_not_null())
    assert unjudged.height == failed and unjudged["judge_score"].null_count() == failed
    assert unjudged["dropped_by"].null_count() == failed and unjudged["judge_error"].str.contains("HTTP 500").all()

    fake.failing = False  # the judge is back: only the failed requests are sent again
    sent = fake.judge_requests()
    _, second = curate(spec_file, instance)
    assert second["judge/requests_sent"] == failed and second["judge_failed"] == second["judge/failed"] == 0
    assert fake.judge_requests() == sent + failed

    _, third = curate(spec_file, instance)
    assert third["judge/requests_sent"] == 0 and third["judge/cached_hits"] == asked
    assert fake.judge_requests() == sent + failed


def test_the_judged_curation_runs_in_the_gpu_pool(spec_file):
    def pool(path) -> str | None:
        defs = build_definitions(path)
        return next(
            a for a in defs.assets if dg.AssetKey("curated_completions") in getattr(a, "keys", ())
        ).node_def.pool

    assert pool(spec_file) is None  # no judge: plain CPU work, no slot taken
    write_spec(spec_file, "http://127.0.0.1:9/v1")
    assert pool(spec_file) == "gpu"
