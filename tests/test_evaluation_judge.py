"""A spec scored by a user's metric function and by an LLM judge, end to end through the whole graph.

teacher_b and the judge are one OpenAI-compatible server on loopback: as the teacher it
reverses prompts; as the judge it answers "Score: 8", except that it fails every attempt at
some judge requests. The `units` task has no references: it is scored by the judge alone and
by agreement with its teacher.
"""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import yaml

from distill_assets.definitions import build_definitions
from distill_assets.partitions import teacher_task_key
from distill_assets.run import plan, run_pipeline
from distill_assets.spec import load_spec
from tests.openai_server import OpenAIServer, TeacherAndJudge


def same_length(prompt: str, prediction: str, reference: str | None) -> float:
    """A user's metric: the answer is as long as the reference."""
    return float(reference is not None and len(prediction.strip()) == len(reference.strip()))


def judged_spec(spec_file, url: str) -> None:
    data = yaml.safe_load(spec_file.read_text())
    data["teachers"][1] |= {"backend": "openai", "model": "served", "base_urls": [url], "max_retries": 0}
    judge = {"name": "judge", "teacher": "teacher_b"}
    for task in data["tasks"]:
        if task["name"] == "reverse":
            task["metrics"] = ["exact_match", judge, "tests.test_evaluation_judge:same_length"]
        if task["name"] == "units":
            task |= {"reference_field": None, "metrics": [judge]}  # eval prompts without references
    spec_file.write_text(yaml.safe_dump(data))


def test_a_custom_metric_and_the_judge_score_every_model_through_the_cache(spec_file):
    fake = TeacherAndJudge(score=8, fail_every=2)
    with OpenAIServer(fake) as server, dg.DagsterInstance.ephemeral() as instance:
        judged_spec(spec_file, server.url)
        defs = build_definitions(spec_file)
        run_pipeline(defs, plan(spec_file), instance, echo=lambda _: None)
        meta = latest_metadata(instance, "student_evaluation")  # the last student's
        asked = set(fake.judge_prompts())
        failed = {p for p in asked if fake.fails(p)}

        root = load_spec(spec_file).storage_path()
        report = json.loads((root / "report/report.json").read_text())
        frames = pl.concat([pl.read_parquet(f) for f in (root / "frames").glob("*_evaluation/*.parquet")])
        long = frames.select("model", "stage", "task", "scores").explode("scores").unnest("scores")

        # Every answer the judge could not grade is counted with its reason, never scored 0.
        judge = long.filter(pl.col("metric") == "judge")
        assert (
            judge.height
            == frames.filter(pl.col("task").is_in(["reverse", "units"]) & (pl.col("stage") != "dev")).height
        )
        unscored = judge.filter(pl.col("score").is_null())
        assert unscored.height > 0 and unscored["error"].str.contains("HTTP 500").all()
        assert set(judge.drop_nulls("score")["score"]) == {0.8}
        assert len(failed) > 0 and len(asked) > len(failed)

        # The user's function scored the reverse task, and the task without references by the judge alone.
        custom = long.filter(pl.col("metric") == "tests.test_evaluation_judge:same_length")
        assert custom.height > 0 and custom["score"].null_count() == 0
        units = frames.filter(pl.col("task") == "units")
        assert units["reference"].null_count() == units.height and (units["metric"] == "judge").all()

        # The report names the judge, counts its failures, and measures the task without references by agreement.
        reverse, units_entry = report["tasks"]["reverse"], report["tasks"]["units"]
        assert reverse["metrics"] == ["exact_match", "judge", "tests.test_evaluation_judge:same_length"]
        assert reverse["judges"] == {"judge": "teacher_b"} and units_entry["judges"] == {"judge": "teacher_b"}
        failures = sum(
            r["failed"] for t in ("reverse", "units") for r in report["tasks"][t]["scores"] if r["metric"] == "judge"
        )
        assert failures == unscored.height
        assert units_entry["agreement_metric"] == "normalized_match"
        assert all(0 <= s["agreement"]["estimate"] <= 1 for s in units_entry["students"].values())
        markdown = (root / "report/report.md").read_text()
        assert "judge (judged by teacher_b)" in markdown and "unscored)" in markdown
        assert meta["judge/teacher_b/failed"] > 0 and "after/reverse 95% CI" in meta

        # A rerun asks the judge nothing it has answered: only the failed requests go out again.
        fake.failing = False
        teacher_rows = unscored.filter(pl.col("stage") == "teacher")
        keys = sorted({teacher_task_key(m, t) for m, t in teacher_rows.select("model", "task").iter_rows()})
        assert keys, "no teacher's answer went unjudged: the test needs one"
        before = dict(fake.requests)
        rerun = [evaluate_teacher(defs, instance, key) for key in keys]
        grown = {p for p, n in fake.requests.items() if n > before.get(p, 0)}
        assert grown and grown <= failed
        assert sum(m["judge/teacher_b/requests_sent"] for m in rerun) == len(grown)
        assert all(m["judge/teacher_b/failed"] == 0 for m in rerun)
        again = [evaluate_teacher(defs, instance, key) for key in keys]
        assert all(m["judge/teacher_b/requests_sent"] == 0 for m in again)


def evaluate_teacher(defs: dg.Definitions, instance: dg.DagsterInstance, key: str) -> dict:
    """Materialize one teacher_evaluation partition; its metadata."""
    result = dg.materialize(
        list(defs.assets), selection=[dg.AssetKey("teacher_evaluation")], partition_key=key,
        resources=dict(defs.resources), instance=instance,
    )  # fmt: skip
    assert result.success
    return latest_metadata(instance, "teacher_evaluation")


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}
