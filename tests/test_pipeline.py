"""The whole graph, materialized on a shrunken demo on an ephemeral instance."""

import json

import dagster as dg
import polars as pl
from transformers import AutoModelForCausalLM

from distill_assets.definitions import build_definitions
from distill_assets.run import plan, run_pipeline
from distill_assets.spec import load_spec
from distill_assets.staleness import DATA_VERSION_TAG
from distill_assets.versions import checkpoint_version, frame_version
from tests.conftest import PROJECT_DIR


def test_project_definitions_load():
    defs = build_definitions(PROJECT_DIR / "distill.yaml")
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "teacher_spec", "task_spec", "student_spec", "evaluation_spec",
        "curated_inputs", "eval_set", "dev_set", "synthetic_completions", "curated_completions",
        "routing_table", "training_set",
        "student_checkpoint", "teacher_evaluation", "student_evaluation", "model_efficiency", "distillation_report",
    }  # fmt: skip


def test_whole_graph_on_shrunken_demo(spec_file):
    defs = build_definitions(spec_file)
    spec = load_spec(spec_file)
    lines = []
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(defs, plan(spec_file), instance, echo=lines.append)
        materialized = {
            key.to_user_string()
            for key in instance.get_asset_keys()
            if instance.get_latest_materialization_event(key) is not None
        }
        versions = {  # (asset, partition) -> the data version and metadata of its latest materialization
            (name, m.partition): (m.tags[DATA_VERSION_TAG], {k: v.value for k, v in m.metadata.items()})
            for name in ("training_set", "student_checkpoint")
            for m in (
                r.asset_materialization for r in instance.fetch_materializations(dg.AssetKey(name), limit=10).records
            )
        }
    assert "distillation_report" in materialized and "student_checkpoint" in materialized
    assert len(lines) == 3 + 3 + 3 + 1 + 2 + 6 + 1 + 2 + 1 + 1

    root = spec.storage_path()
    training = pl.read_parquet(root / "frames/training_set/data.parquet")
    assert training.height == 3 * 12
    assert set(zip(training["task"], training["teacher"])) == {
        ("dates", "teacher_a"),
        ("units", "teacher_a"),
        ("reverse", "teacher_b"),
    }
    for teacher, version in set(zip(training["teacher"], training["teacher_version"])):
        assert version == spec.teacher(teacher).version()
    assert (root / "exports/training_set.jsonl").read_text().count("\n") == training.height

    checkpoint = root / "checkpoints/student_m"
    assert (checkpoint / "README.md").read_text().startswith("---")
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert model.config.hidden_size == 16

    report = json.loads((root / "report/report.json").read_text())
    assert set(report["tasks"]) == {"dates", "reverse", "units"}
    for task in report["tasks"].values():
        assert set(task["teachers"]) == {"teacher_a", "teacher_b"}
        for student in task["students"].values():
            assert 0.0 <= student["before"] <= 1.0 and 0.0 <= student["after"] <= 1.0
    for name in ("teacher_a", "teacher_b", "student_m", "student_s"):
        figures = report["models"][name]
        for field in ("parameters", "checkpoint_mb", "ttft_ms_p50", "latency_ms_p50", "latency_ms_p95",
                      "throughput_tokens_per_s", "peak_memory_mb", "cost_per_million_tokens_usd"):  # fmt: skip
            assert figures[field] is not None and figures[field] >= 0, (name, field)
    assert report["models"]["student_s"]["parameters"] < report["models"]["student_m"]["parameters"]
    assert "| dates | teacher_a |" in (root / "report/report.md").read_text()
    data = {(d["teacher"], d["task"]): d for d in report["data"]}
    assert set(data) == {("teacher_a", "dates"), ("teacher_a", "units"), ("teacher_b", "reverse")}
    for d in data.values():
        assert d["generated"] == d["kept"] + sum(d["dropped"].values())  # nothing dropped without a count
    assert "## Data" in (root / "report/report.md").read_text()

    # Lineage: training set -> checkpoint metadata -> report.
    training_version = versions[("training_set", None)][0]
    assert training_version == frame_version(training)
    assert report["lineage"]["training_set_version"] == training_version
    for student in ("student_m", "student_s"):
        version, meta = versions[("student_checkpoint", student)]
        assert meta["training_set_version"] == training_version
        assert meta["checkpoint_version"] == version == checkpoint_version(root / "checkpoints" / student)
        assert report["lineage"]["checkpoints"][student]["checkpoint_version"] == version
    assert f"`{versions[('student_checkpoint', 'student_m')][0]}`" in (root / "report/report.md").read_text()
