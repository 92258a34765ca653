"""Per-teacher staleness and the backfill: edit one teacher, and only its partitions run again."""

from __future__ import annotations

import json

import dagster as dg
import yaml

from distill_assets.assets.routing_assets import current_routing
from distill_assets.backfill import backfill
from distill_assets.definitions import build_definitions
from distill_assets.partitions import teacher_task_key
from distill_assets.run import plan, run_pipeline, store_of
from distill_assets.spec import load_spec
from distill_assets.staleness import StaleStatus, observe_spec, plan_stale, stale_status_resolver

# Up to the training set, plus the teachers' evaluation: the part of the graph a teacher touches,
# without training students (test_pipeline covers those).
STAGES = {"curated_inputs", "synthetic_completions", "curated_completions", "training_set", "teacher_evaluation"}
SYNTHETIC = dg.AssetKey("synthetic_completions")


def steps(spec_file):
    return [(keys, parts) for keys, parts in plan(spec_file) if keys[0] in STAGES]


def edit(spec_file, change) -> None:
    # Through JSON: the fixture's YAML shares one `generation` mapping between teachers (an alias).
    data = json.loads(json.dumps(yaml.safe_load(spec_file.read_text())))
    change(data)
    spec_file.write_text(yaml.safe_dump(data))


def latest_storage_ids(instance, key: dg.AssetKey) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in instance.fetch_materializations(key, limit=1000).records:
        out.setdefault(r.asset_materialization.partition, r.storage_id)
    return out


def statuses(defs, instance, key: dg.AssetKey, partitions: list[str]) -> dict[str, StaleStatus]:
    resolver = stale_status_resolver(defs, instance)
    return {p: resolver.get_status(key, p) for p in partitions}


def test_one_teacher_changed_backfills_only_its_partitions(spec_file):
    quiet = []
    with dg.DagsterInstance.ephemeral() as instance:
        defs = build_definitions(spec_file)
        run_pipeline(defs, steps(spec_file), instance, echo=quiet.append)

        rerun = backfill(defs, steps(spec_file), instance, echo=quiet.append)
        assert rerun["partitions"] == 0 and rerun["requests_sent"] == 0

        edit(spec_file, lambda d: d["teachers"][1]["generation"].update(temperature=0.7))  # teacher_b
        defs = build_definitions(spec_file)
        observe_spec(defs, instance)
        teacher_task = [
            teacher_task_key(t, k) for t in ("teacher_a", "teacher_b") for k in ("dates", "reverse", "units")
        ]
        generated = statuses(defs, instance, SYNTHETIC, teacher_task)
        evaluated = statuses(defs, instance, dg.AssetKey("teacher_evaluation"), teacher_task)
        b_reverse = teacher_task_key("teacher_b", "reverse")
        # Only the routed partitions were generated; of those, only teacher_b's is stale.
        assert {p for p, s in generated.items() if s == StaleStatus.STALE} == {b_reverse}
        assert {p for p, s in generated.items() if s == StaleStatus.FRESH} == {
            teacher_task_key("teacher_a", "dates"),
            teacher_task_key("teacher_a", "units"),
        }
        assert {p for p, s in evaluated.items() if s == StaleStatus.STALE} == {
            teacher_task_key("teacher_b", k) for k in ("dates", "reverse", "units")
        }
        assert {p for p, s in evaluated.items() if s == StaleStatus.FRESH} == {
            teacher_task_key("teacher_a", k) for k in ("dates", "reverse", "units")
        }

        before = latest_storage_ids(instance, SYNTHETIC)
        root = load_spec(spec_file).storage_path()
        a_file = (
            root
            / "frames/synthetic_completions"
            / f"{teacher_task_key('teacher_a', 'dates').replace('|', '__')}.parquet"
        )
        a_mtime = a_file.stat().st_mtime_ns
        done = backfill(defs, steps(spec_file), instance, echo=quiet.append)
        plan_run = done["plan"]
        assert plan_run.partitions("synthetic_completions") == [b_reverse]
        assert plan_run.partitions("curated_completions") == [b_reverse]
        assert plan_run.partitions("training_set") == [None]  # downstream of the regenerated partition
        assert plan_run.partitions("curated_inputs") == []
        # Teacher requests: every reverse prompt once (12), all of them teacher_b's; none of teacher_a's.
        # teacher_b's evaluation ran again (its version changed) but greedy eval answers come from the cache.
        asked = {k for k, r in done["per_partition"].items() if r["requests_sent"]}
        assert done["requests_sent"] == 12 and asked == {f"synthetic_completions[{b_reverse}]"}
        assert {k for k in done["per_partition"] if k.startswith("teacher_evaluation")} == {
            f"teacher_evaluation[{teacher_task_key('teacher_b', k)}]" for k in ("dates", "reverse", "units")
        }
        after = latest_storage_ids(instance, SYNTHETIC)
        for key in (teacher_task_key("teacher_a", "dates"), teacher_task_key("teacher_a", "units")):
            assert after[key] == before[key]  # teacher_a's partitions were not materialized again
        assert after[b_reverse] > before[b_reverse]
        assert a_file.stat().st_mtime_ns == a_mtime

        assert len(plan_stale(defs, steps(spec_file), instance)) == 0  # everything fresh again


def test_adding_and_removing_a_teacher_and_task_keeps_other_materializations(spec_file):
    quiet = []
    generation_steps = [s for s in steps(spec_file) if s[0][0] != "teacher_evaluation"]
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(build_definitions(spec_file), generation_steps, instance, echo=quiet.append)
        before = latest_storage_ids(instance, SYNTHETIC)

        def add(d):
            d["tasks"].append({**d["tasks"][0], "name": "dates_copy"})
            d["teachers"].append({**d["teachers"][0], "name": "teacher_c", "tasks": ["dates_copy"]})

        edit(spec_file, add)
        defs = build_definitions(spec_file)
        new_steps = [s for s in steps(spec_file) if s[0][0] != "teacher_evaluation"]
        stale = plan_stale(defs, new_steps, instance)
        c_key = teacher_task_key("teacher_c", "dates_copy")
        assert stale.partitions("curated_inputs") == ["dates_copy"]
        assert stale.partitions("synthetic_completions") == [c_key]
        assert stale.partitions("training_set") == [None]
        done = backfill(defs, new_steps, instance, echo=quiet.append)
        assert set(done["per_partition"]) == {f"synthetic_completions[{c_key}]"}
        after = latest_storage_ids(instance, SYNTHETIC)
        assert {k: after[k] for k in before} == before  # the others kept their materializations

        def remove(d):
            d["tasks"] = [t for t in d["tasks"] if t["name"] != "dates_copy"]
            d["teachers"] = [t for t in d["teachers"] if t["name"] != "teacher_c"]

        edit(spec_file, remove)
        defs = build_definitions(spec_file)
        spec = load_spec(spec_file)
        routing = lambda: current_routing(spec, store_of(spec))  # noqa: E731
        stale = plan_stale(defs, generation_steps, instance, routing)
        assert [keys for keys, _ in stale.steps] == [["training_set"]]  # only the merge, without dates_copy
        backfill(defs, generation_steps, instance, echo=quiet.append, routing=routing)
        assert len(plan_stale(defs, generation_steps, instance, routing)) == 0
        assert {k: v for k, v in latest_storage_ids(instance, SYNTHETIC).items() if k in before} == before


def test_sensor_is_off_by_default_and_requests_a_backfill_of_the_changed_teacher(spec_file):
    defs = build_definitions(spec_file)
    sensor = defs.resolve_sensor_def("teacher_change_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.DagsterInstance.ephemeral() as instance:
        observe_spec(defs, instance)
        context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
        assert isinstance(sensor(context), dg.SkipReason)  # nothing changed

        edit(spec_file, lambda d: d["teachers"][0].update(prompt_template="Q: {prompt}\nA:"))  # teacher_a
        result = sensor(context)
        assert [e.partition for e in result.asset_events] == ["teacher_a"]
        (request,) = result.run_requests
        subset = request.asset_graph_subset
        generated = set(subset.get_partitions_subset(SYNTHETIC).get_partition_keys())
        assert generated == {teacher_task_key("teacher_a", "dates"), teacher_task_key("teacher_a", "units")}
        assert dg.AssetKey("training_set") in subset.non_partitioned_asset_keys
        assert dg.AssetKey("distillation_report") in subset.non_partitioned_asset_keys
        assert set(subset.get_partitions_subset(dg.AssetKey("student_checkpoint")).get_partition_keys()) == {
            "student_m",
            "student_s",
        }
        context.update_cursor(context.cursor)
        assert isinstance(sensor(context), dg.SkipReason)  # launched once per change


def test_editing_a_student_a_task_or_the_evaluation_makes_stale_only_what_depends_on_it(spec_file):
    names = STAGES | {"student_checkpoint"}
    with dg.DagsterInstance.ephemeral() as instance:
        defs = build_definitions(spec_file)
        run_pipeline(defs, [s for s in plan(spec_file) if s[0][0] in names], instance, echo=lambda _: None)
        assert len(plan_stale(defs, [s for s in plan(spec_file) if s[0][0] in names], instance)) == 0

        def stale_after(change) -> dict[str, list]:
            edit(spec_file, change)
            defs = build_definitions(spec_file)
            observe_spec(defs, instance)
            stale = plan_stale(defs, [s for s in plan(spec_file) if s[0][0] in names], instance)
            return {keys[0]: parts for keys, parts in stale.steps}

        # One student's training block: only its checkpoint.
        assert stale_after(lambda d: d["students"][1]["training"].update(max_steps=3)) == {
            "student_checkpoint": ["student_s"]
        }
        edit(spec_file, lambda d: d["students"][1]["training"].update(max_steps=2))  # back as it was

        # The evaluation settings: every teacher evaluation, nothing upstream.
        stale = stale_after(lambda d: d["evaluation"].update(max_new_tokens=5))
        assert list(stale) == ["teacher_evaluation"] and len(stale["teacher_evaluation"]) == 6

        # One task's input file: its inputs and everything downstream of them.
        source = spec_file.parent / "data/units_train.jsonl"
        stale = stale_after(lambda d: source.write_text(source.read_text() + source.read_text().splitlines()[0] + "\n"))
        assert stale["curated_inputs"] == ["units"]
        assert stale["synthetic_completions"] == [teacher_task_key("teacher_a", "units")]
        assert stale["student_checkpoint"] == ["student_m", "student_s"]
