"""Staged students: a student built on another student's checkpoint (`base: {student: ...}`), in the asset graph."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from bench.methods_seeds import default_students, stage_steps, stages_table
from distill_assets.definitions import build_definitions
from distill_assets.report import build_report, to_markdown
from distill_assets.run import plan, run_pipeline
from distill_assets.spec import SpecError, load_spec
from distill_assets.staleness import StaleStatus, observe_spec, plan_stale, stale_status_resolver
from distill_assets.versions import checkpoint_version, read_lineage
from tests.conftest import PROJECT_DIR, shrunken_spec
from tests.test_pipes_training import demo_training_set, pipes_spec
from tests.test_report import predictions

STAGE1, STAGE2 = dg.AssetKey("student_checkpoint"), dg.AssetKey("student_checkpoint_stage2")
# The graph up to the students' evaluation: the report and the efficiency timings add nothing here.
THROUGH_EVALUATION = {
    "curated_inputs", "synthetic_completions", "curated_completions", "training_set",
    "student_checkpoint", "student_checkpoint_stage2", "student_evaluation",
}  # fmt: skip


def staged(data: dict) -> dict:
    """The shrunken spec with student_s, and student_s2 built on it: SFT, then on-policy from teacher_a."""
    student_s = next(s for s in data["students"] if s["name"] == "student_s")
    student_s2 = {
        "name": "student_s2",
        "base": {"student": "student_s"},
        "method": "on_policy",
        "on_policy": {"teacher": "teacher_a", "max_completion_length": 4},
        "training": dict(student_s["training"]),
    }
    return data | {"students": [student_s, student_s2]}


@pytest.fixture
def staged_spec(tmp_path: Path, tiny_teacher: Path) -> Path:
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(staged(shrunken_spec(tmp_path, tiny_teacher))))
    return path


def _error(spec_file: Path, change) -> str:
    """The error loading the spec gives once `change` has edited its students (in a copy beside it)."""
    data = yaml.safe_load(spec_file.read_text())
    change(data["students"])
    changed = spec_file.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as err:
        load_spec(changed)
    return str(err.value)


def test_a_staged_student_names_a_known_other_student_and_no_cycle(staged_spec):
    spec = load_spec(staged_spec)
    assert [s.name for s in spec.stages("student_s2")] == ["student_s", "student_s2"]
    assert spec.students_by_stage() == [["student_s"], ["student_s2"]]

    def unknown(students):
        students[1]["base"] = {"student": "student_xl"}

    assert "students.student_s2.base.student: unknown student 'student_xl'; students are" in _error(
        staged_spec, unknown
    )

    def itself(students):
        students[1]["base"] = {"student": "student_s2"}

    assert "students.student_s2.base.student: a student cannot start from itself" in _error(staged_spec, itself)

    def cycle(students):
        students[0]["base"] = {"student": "student_s2"}
        students[0]["training"] = students[1]["training"]

    assert "students: staged students form a cycle: student_s -> student_s2 -> student_s" in _error(staged_spec, cycle)


def test_a_student_base_is_exactly_one_of_model_architecture_or_student(staged_spec):
    def two(students):
        students[1]["base"]["model"] = "meta-llama/Llama-3.2-1B-Instruct"

    assert "students.student_s2.base: give exactly one of `model`, `architecture` or `student`" in _error(
        staged_spec, two
    )

    def with_tokenizer(students):
        students[1]["base"] = {"student": "student_s", "tokenizer": students[0]["base"]["tokenizer"]}

    assert "a student built on another student takes that student's tokenizer" in _error(staged_spec, with_tokenizer)


def test_the_staged_checkpoint_depends_on_its_base_and_the_run_plan_trains_the_base_first(staged_spec):
    graph = build_definitions(staged_spec).resolve_asset_graph()
    assert STAGE1 in graph.get(STAGE2).parent_keys
    parents = graph.get_parent_partition_keys_for_child("student_s2", STAGE1, STAGE2)
    assert set(parents.partitions_subset.get_partition_keys()) == {"student_s"}
    # the staged student's evaluation scores its base's checkpoint as "before": it reads it too
    evaluation = dg.AssetKey("student_evaluation")
    parents = graph.get_parent_partition_keys_for_child("student_s2", STAGE1, evaluation)
    assert set(parents.partitions_subset.get_partition_keys()) == {"student_s"}
    parents = graph.get_parent_partition_keys_for_child("student_s", STAGE2, evaluation)
    assert set(parents.partitions_subset.get_partition_keys()) == set()

    steps = {keys[0]: (i, parts) for i, (keys, parts) in enumerate(plan(staged_spec))}
    assert steps["student_checkpoint"][1] == ["student_s"]
    assert steps["student_checkpoint_stage2"][1] == ["student_s2"]
    order = [steps[k][0] for k in ("training_set", "student_checkpoint", "student_checkpoint_stage2")]
    assert order == sorted(order) and steps["student_evaluation"][0] > order[-1]


def test_a_spec_without_staged_students_keeps_one_checkpoint_asset(spec_file):
    keys = {k.to_user_string() for k in build_definitions(spec_file).resolve_asset_graph().get_all_asset_keys()}
    assert "student_checkpoint" in keys and not any(k.startswith("student_checkpoint_stage") for k in keys)


def _steps(spec_file: Path):
    return [(keys, parts) for keys, parts in plan(spec_file) if keys[0] in THROUGH_EVALUATION]


def _latest(instance, key: dg.AssetKey, partition: str) -> dict:
    """The metadata of the partition's latest materialization."""
    records = instance.fetch_materializations(key, limit=20).records
    event = next(r.asset_materialization for r in records if r.asset_materialization.partition == partition)
    return {k: v.value for k, v in event.metadata.items()}


def test_staged_student_trains_from_its_base_and_turns_stale_when_the_base_is_rebuilt(staged_spec):
    spec = load_spec(staged_spec)
    root = spec.storage_path()
    with dg.DagsterInstance.ephemeral() as instance:
        defs = build_definitions(staged_spec)
        run_pipeline(defs, _steps(staged_spec), instance, echo=lambda _: None)

        base = read_lineage(root / "checkpoints/student_s")["checkpoint_version"]
        meta = _latest(instance, STAGE2, "student_s2")
        assert meta["base_student"] == "student_s" and meta["base_checkpoint_version"] == base
        assert meta["method"] == "on_policy"
        metrics = json.loads((root / "checkpoints/student_s2/training_metrics.json").read_text())
        assert metrics["base_student"] == {"student": "student_s", "checkpoint_version": base}
        assert [h["step"] for h in metrics["loss_history"]] == [1, 2]  # the on-policy stage did train
        assert "student `student_s`'s checkpoint" in (root / "checkpoints/student_s2/README.md").read_text()
        # The staged student's "before" is its base after training: the same checkpoint, the same answers.
        frames = root / "frames/student_evaluation"
        evaluation = {p: pl.read_parquet(frames / f"{p}.parquet") for p in ("student_s", "student_s2")}
        before = evaluation["student_s2"].filter(stage="before").sort("task", "prompt_id")
        after = evaluation["student_s"].filter(stage="after").sort("task", "prompt_id")
        assert before["prediction"].to_list() == after["prediction"].to_list()
        assert len(plan_stale(defs, _steps(staged_spec), instance)) == 0

        # Edit the first student: its checkpoint is stale, and so is the one built on it.
        data = yaml.safe_load(staged_spec.read_text())
        data["students"][0]["training"]["max_steps"] = 3
        staged_spec.write_text(yaml.safe_dump(data))
        defs = build_definitions(staged_spec)
        observe_spec(defs, instance)
        stale = {keys[0]: parts for keys, parts in plan_stale(defs, _steps(staged_spec), instance).steps}
        assert stale == {
            "student_checkpoint": ["student_s"],
            "student_checkpoint_stage2": ["student_s2"],
            "student_evaluation": ["student_s", "student_s2"],
        }

        # Rebuild the first student only: the staged one is stale because its base has new data.
        run_pipeline(defs, [(["student_checkpoint"], ["student_s"])], instance, echo=lambda _: None, observe=False)
        resolver = stale_status_resolver(defs, instance)
        assert resolver.get_status(STAGE1, "student_s") == StaleStatus.FRESH
        assert resolver.get_status(STAGE2, "student_s2") == StaleStatus.STALE
        causes = resolver.get_stale_causes(STAGE2, "student_s2")
        assert [(c.dependency.asset_key, c.dependency.partition_key, c.reason) for c in causes] == [
            (STAGE1, "student_s", "has a new dependency data version")
        ]

        done = run_pipeline(defs, _steps(staged_spec), instance, echo=lambda _: None, only_stale=True)
        assert done.partitions("student_checkpoint_stage2") == ["student_s2"]
        assert done.partitions("student_checkpoint") == []
        rebuilt = read_lineage(root / "checkpoints/student_s")["checkpoint_version"]
        assert rebuilt != base and _latest(instance, STAGE2, "student_s2")["base_checkpoint_version"] == rebuilt


def test_the_report_shows_each_stage_and_the_gain_of_the_last(staged_spec):
    spec = load_spec(staged_spec)
    after = {("student_s", "dates"): 0.5, ("student_s", "reverse"): 0.25, ("student_s2", "dates"): 0.75}
    rows = [(m, "after", t, v) for (m, t), v in after.items()] + [("student_s2", "after", "reverse", 0.25)]
    report = build_report(spec, predictions(rows), {}, "test cpu")
    (row,) = report["stages"]
    assert row["student"] == "student_s2" and row["base_student"] == "student_s"
    assert row["stages"] == ["student_s", "student_s2"]
    assert row["scores"]["dates"] == {"student_s": 0.5, "student_s2": 0.75}
    assert row["gain"] == {"dates": 0.25, "reverse": 0.0, "units": None}  # units was not scored
    assert {m["student"]: m["size"] for m in report["methods"]} == {"student_s": "8x1", "student_s2": "8x1"}
    markdown = to_markdown(report)
    assert "## Staged students: student_s -> student_s2 (headline score after each stage)" in markdown
    assert "| dates | 0.500 | 0.750 | +0.250 |" in markdown and "| units | – | – | – |" in markdown


@pytest.mark.parametrize("launcher", ["in_process", "torchrun"])
def test_a_staged_student_on_another_machine_fetches_its_base_from_the_object_store(
    tmp_path, tiny_teacher, memory_root, monkeypatch, launcher
):
    """Each stage trains with a local folder of its own: the second reads the first's checkpoint from the store."""
    spec_path = pipes_spec(tmp_path, tiny_teacher, {"kind": "in_process"}, steps=2)
    data = yaml.safe_load(spec_path.read_text())
    first = data["students"][0]
    data["students"].append(
        {"name": "student_m2", "base": {"student": "student_m"}, "training": first["training"],
         "launcher": {"kind": launcher, "nproc_per_node": 1}}
    )  # fmt: skip
    spec_path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("DISTILL_STORAGE_ROOT", memory_root)
    trained = {}
    with dg.DagsterInstance.ephemeral() as instance:
        for key, student, machine in ((STAGE1, "student_m", "first"), (STAGE2, "student_m2", "second")):
            monkeypatch.setenv("DISTILL_LOCAL_ROOT", str(tmp_path / machine))
            defs = build_definitions(spec_path)
            if key == STAGE1:
                with defs.resources["store"].frame_path("training_set").open("wb") as f:
                    demo_training_set(16).write_parquet(f)  # the upstream asset, as the IO manager stores it
            assets = [a for a in defs.assets if {STAGE1, STAGE2} & set(getattr(a, "keys", ()))]
            result = dg.materialize(
                [*assets, dg.AssetSpec("training_set")], selection=[key], partition_key=student,
                resources=dict(defs.resources), instance=instance,
            )  # fmt: skip
            assert result.success
            event = instance.get_latest_materialization_event(key).asset_materialization
            trained[student] = {k: v.value for k, v in event.metadata.items()}
    assert trained["student_m2"]["base_checkpoint_version"] == trained["student_m"]["checkpoint_version"]
    fetched = tmp_path / "second/checkpoints/student_m"  # the first stage's checkpoint, fetched by the second
    assert checkpoint_version(fetched) == trained["student_m"]["checkpoint_version"]
    assert trained["student_m2"]["stored_at"].startswith(f"{memory_root}/checkpoints/student_m2/")


def test_the_seeds_bench_trains_a_staged_student_at_the_others_total_steps():
    spec = load_spec(PROJECT_DIR / "bench/methods.yaml")
    steps = {s: sum(stage_steps(spec, s, None).values()) for s in ("student_s", "student_s_sft_on_policy")}
    assert steps["student_s"] == steps["student_s_sft_on_policy"]  # SFT then on-policy, same total budget
    assert stage_steps(spec, "student_s_sft_on_policy", 40) == {"student_s_stage1": 32, "student_s_sft_on_policy": 8}
    # the first stage trains (and is scored) inside the staged student's job, not as a row of its own
    assert "student_s_sft_on_policy" in default_students(spec) and "student_s_stage1" not in default_students(spec)

    def result(first: float, last: float) -> dict:
        """One seed's result for staged student b built on a: each stage's score on task t."""
        stages = [
            {"student": "a", "steps": 3, "scores": {"t": first}},
            {"student": "b", "steps": 1, "scores": {"t": last}},
        ]
        return {"student": "b", "stages": stages}

    lines = stages_table([result(0.5, 0.75), result(0.5, 0.25)], ["t"]).splitlines()
    assert lines[2:] == [
        "| b | a | 3 | 0.500 (0.500-0.500) | 0.500 (0.500-0.500) |",
        "| b | b | 1 | 0.500 (0.250-0.750) | 0.500 (0.250-0.750) |",
        "| b | gain of the last stage |  | +0.000 (-0.250 to +0.250) | +0.000 (-0.250 to +0.250) |",
    ]
