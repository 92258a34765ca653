"""What a new user tries first: one task, one teacher behind an OpenAI-compatible server, one student;
then the same command again, which must ask the teacher nothing and train nothing."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest
import yaml

from distill_assets.assets import training_assets
from distill_assets.assets.routing_assets import current_routing
from distill_assets.definitions import build_definitions
from distill_assets.execution import MODEL_POOL
from distill_assets.run import plan, run_pipeline, store_of, worker_processes
from distill_assets.spec import load_spec
from tests.conftest import PROJECT_DIR, shrunken_spec
from tests.openai_server import FakeTeacher, OpenAIServer


def one_task_spec(tmp_path, tiny_teacher, url: str):
    data = shrunken_spec(tmp_path, tiny_teacher)
    data["tasks"] = [t for t in data["tasks"] if t["name"] == "reverse"]
    data["teachers"] = [
        {"name": "teacher", "backend": "openai", "model": "served-teacher", "base_urls": [url], "tasks": ["reverse"],
         "generation": {"max_new_tokens": 16}, "max_retries": 0},
    ]  # fmt: skip
    data["students"] = data["students"][:1]
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def requests_received(server: OpenAIServer) -> int:
    return sum(server.teacher.requests.values())


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = training_assets.train_student

    def counted(*args, **kwargs):
        calls.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(training_assets, "train_student", counted)
    return calls


def test_one_task_one_teacher_one_student_end_to_end_then_an_unchanged_rerun_does_nothing(
    tmp_path, tiny_teacher, count_training
):
    with OpenAIServer(FakeTeacher()) as server:
        path = one_task_spec(tmp_path, tiny_teacher, server.url)
        spec = load_spec(path)
        defs = build_definitions(path)
        routing = lambda: current_routing(spec, store_of(spec))  # noqa: E731
        with dg.DagsterInstance.ephemeral() as instance:
            first = run_pipeline(defs, plan(path, defs=defs), instance, echo=lambda _: None, only_stale=True,
                                 routing=routing)  # fmt: skip
            assert len(first) == len(plan(path, defs=defs))  # a new instance: everything was missing
            asked = requests_received(server)
            # 12 training prompts generated, 4 eval prompts answered for the teacher's evaluation
            assert asked == 12 + 4
            assert count_training == ["student_m"]

            lines: list[str] = []
            second = run_pipeline(defs, plan(path, defs=defs), instance, echo=lines.append, only_stale=True,
                                  routing=routing)  # fmt: skip
            assert len(second) == 0
            assert requests_received(server) == asked  # not one request more, anywhere in the graph
            assert count_training == ["student_m"]  # nothing trained again
            assert any(line.startswith("  skipped student_checkpoint[student_m]: up to date") for line in lines)

            forced = run_pipeline(defs, plan(path, defs=defs), instance, echo=lambda _: None, routing=routing)
            assert len(forced) == len(first)
            assert requests_received(server) == asked  # recomputed, but every answer came from the cache
            assert count_training == ["student_m", "student_m"]

    root = spec.storage_path()
    report = json.loads((root / "report" / "report.json").read_text())
    assert set(report["routing"]) == {"reverse"} and report["routing"]["reverse"] == "teacher"
    assert "student_m" in report["models"]
    training = pl.read_parquet(root / "frames/training_set/data.parquet")
    assert set(training["task"]) == {"reverse"} and training.height == 12
    evaluated = pl.read_parquet(root / "frames/student_evaluation/student_m.parquet")
    assert set(evaluated["task"]) == {"reverse"} and set(evaluated["stage"]) == {"before", "after"}


def test_partitions_of_a_step_side_by_side_in_worker_processes(spec_file, tmp_path, monkeypatch):
    """The CPU schedule: each student, each teacher x task, in a one-thread process of its own."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the workers open the same persistent instance
    wanted = {"curated_inputs", "synthetic_completions", "curated_completions", "training_set", "student_checkpoint"}
    steps = [(keys, parts) for keys, parts in plan(spec_file) if wanted & set(keys)]
    lines: list[str] = []
    with dg.DagsterInstance.get() as instance:
        with worker_processes(spec_file, instance, 2) as workers:
            assert workers is not None
            assert next(p for p in instance.event_log_storage.get_pool_limits() if p.name == MODEL_POOL).limit == 2
            done = run_pipeline(build_definitions(spec_file), steps, instance, echo=lines.append, workers=workers)
        # the pool's limit is the instance's own again (dagster.yaml's default: one at a time)
        assert all(p.from_default or p.limit == 1 for p in instance.event_log_storage.get_pool_limits())
        assert set(done.partitions("student_checkpoint")) == {"student_m", "student_s"}
        records = instance.fetch_materializations(dg.AssetKey("student_checkpoint"), limit=10).records
        assert {r.asset_materialization.partition for r in records} == {"student_m", "student_s"}
        for student in ("student_m", "student_s"):
            assert (load_spec(spec_file).storage_path() / "checkpoints" / student / "model.safetensors").is_file()
        runs = {r.dagster_run.tags.get("dagster/partition") for r in instance.get_run_records()}
        assert {"student_m", "student_s", "dates", "reverse", "units"} <= runs
    assert sum(line.startswith("  done student_checkpoint[") for line in lines) == 2
