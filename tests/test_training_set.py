import json

import datasets
import polars as pl
import pytest

from distill_assets.generation import COMPLETION_SCHEMA
from distill_assets.partitions import teacher_task_key
from distill_assets.routing import Routing
from distill_assets.spec import load_spec
from distill_assets.training_set import export, merge_routed


def completions(teacher: str, task: str, n: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "task": task,
            "prompt_id": [f"{task}-{i}" for i in range(n)],
            "prompt": [f"{task} prompt {i}" for i in range(n)],
            "sample_index": 0,
            "completion": [f"{teacher} says {i}" for i in range(n)],
            "num_tokens": 3,
            "finish_reason": "stop",
            "error": None,
            "top_logprobs": None,
            "teacher": teacher,
            "teacher_version": f"v-{teacher}",
        },
        schema=COMPLETION_SCHEMA,
    )


def test_each_task_comes_from_its_routed_teacher(spec_file):
    spec = load_spec(spec_file)
    every = {
        teacher_task_key(teacher.name, task.name): completions(teacher.name, task.name)
        for teacher in spec.teachers
        for task in spec.tasks
    }
    merged = merge_routed(every, spec, Routing.from_spec(spec))
    assert merged.height == 9
    assert dict(merged.select("task", "teacher").unique().iter_rows()) == Routing.from_spec(spec).teachers
    first = merged.filter(pl.col("task") == "reverse").row(0, named=True)
    assert first["messages"] == [
        {"role": "user", "content": "reverse prompt 0"},
        {"role": "assistant", "content": "teacher_b says 0"},
    ]
    assert {"teacher", "teacher_version", "task", "prompt_id"} <= set(merged.columns)


def test_routed_keys_match_dagster_partition_keys(spec_file):
    keys = Routing.from_spec(load_spec(spec_file)).partition_keys()
    assert keys == ["dates|teacher_a", "reverse|teacher_b", "units|teacher_a"]


def test_missing_routed_partition_is_an_error(spec_file):
    spec = load_spec(spec_file)
    with pytest.raises(KeyError, match=r"reverse\|teacher_b"):
        merge_routed(
            {teacher_task_key("teacher_a", "dates"): completions("teacher_a", "dates")}, spec, Routing.from_spec(spec)
        )


def test_system_prompt_is_kept_in_messages(spec_file, tmp_path):
    import yaml

    data = yaml.safe_load(spec_file.read_text())
    data["tasks"][0]["system_prompt"] = "Answer with the date only."
    spec_file.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_file)
    routing = Routing.from_spec(spec)
    merged = merge_routed({k: completions(*reversed(k.split("|"))) for k in routing.partition_keys()}, spec, routing)
    dates = merged.filter(pl.col("task") == "dates").row(0, named=True)
    assert dates["messages"][0] == {"role": "system", "content": "Answer with the date only."}


def test_export_writes_chat_jsonl_and_a_datasets_directory(spec_file, tmp_path):
    spec = load_spec(spec_file)
    routing = Routing.from_spec(spec)
    merged = merge_routed({k: completions(*reversed(k.split("|"))) for k in routing.partition_keys()}, spec, routing)
    paths = export(merged, tmp_path / "exports")
    lines = paths["jsonl"].read_text().splitlines()
    assert len(lines) == merged.height
    assert json.loads(lines[0])["messages"][-1]["role"] == "assistant"
    ds = datasets.load_from_disk(str(paths["datasets"]))
    assert ds.num_rows == merged.height and "messages" in ds.column_names


@pytest.mark.parametrize(("teacher", "task"), [("teacher_a", "dates"), ("t-1", "a_task"), ("z", "b")])
def test_partition_key_strings_are_dagsters(teacher, task):
    import dagster as dg

    assert teacher_task_key(teacher, task) == str(dg.MultiPartitionKey({"teacher": teacher, "task": task}))
