import json

import datasets
import polars as pl
import pytest

from distill_assets.generation import chat_prompt, chat_with_answer
from distill_assets.partitions import teacher_task_key
from distill_assets.routing import Routing
from distill_assets.spec import load_spec
from distill_assets.training_set import MESSAGES, export, merge_routed
from tests.topk_frames import topk_frame


def completions(teacher: str, task: str, n: int = 3) -> pl.DataFrame:
    frame = topk_frame(n, teacher=teacher, task=task, seed=len(teacher + task))
    return frame.with_columns(
        prompt=pl.format("{} prompt {}", "task", pl.int_range(pl.len())),
        completion=pl.format("{} says {}", "teacher", pl.int_range(pl.len())),
    )


def merged_frame(spec) -> pl.DataFrame:
    routing = Routing.from_spec(spec)
    return merge_routed({k: completions(*reversed(k.split("|"))) for k in routing.partition_keys()}, spec, routing)


def test_each_task_comes_from_its_routed_teacher(spec_file):
    spec = load_spec(spec_file)
    every = {
        teacher_task_key(teacher.name, task.name): completions(teacher.name, task.name)
        for teacher in spec.teachers
        for task in spec.tasks
    }
    merged = merge_routed(every, spec, Routing.from_spec(spec)).collect()
    assert merged.height == 9
    assert dict(merged.select("task", "teacher").unique().iter_rows()) == Routing.from_spec(spec).teachers
    first = merged.filter(pl.col("task") == "reverse").row(0, named=True)
    assert first["messages"] == [
        {"role": "user", "content": "reverse prompt 0"},
        {"role": "assistant", "content": "teacher_b says 0"},
    ]
    assert {"teacher", "teacher_version", "task", "prompt_id"} <= set(merged.columns)
    reverse = every[teacher_task_key("teacher_b", "reverse")]
    assert merged.filter(pl.col("task") == "reverse")["topk_ids"].to_list() == reverse["topk_ids"].to_list()


def test_failed_requests_are_left_out(spec_file):
    spec = load_spec(spec_file)
    routing = Routing.from_spec(spec)
    every = {k: completions(*reversed(k.split("|"))) for k in routing.partition_keys()}
    key = routing.partition_keys()[0]
    every[key] = every[key].with_columns(error=pl.when(pl.col("prompt_id").str.ends_with("-1")).then(pl.lit("500")))
    merged = merge_routed(every, spec, routing).collect()
    assert merged.height == 8 and f"{key.split('|')[0]}-1" not in merged["prompt_id"].to_list()


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
    dates = merged_frame(spec).collect().filter(pl.col("task") == "dates").row(0, named=True)
    assert dates["messages"][0] == {"role": "system", "content": "Answer with the date only."}


def test_export_writes_text_only_chat_jsonl_and_a_datasets_directory(spec_file, tmp_path):
    merged = merged_frame(load_spec(spec_file))
    paths = export(merged, tmp_path / "exports")
    assert set(paths) == {"jsonl", "datasets"} and not (tmp_path / "exports/training_set_logprobs.parquet").exists()
    lines = [json.loads(line) for line in paths["jsonl"].read_text().splitlines()]
    text = merged.drop("topk_ids", "topk_logprobs", "topk_tokens").collect()
    assert lines == text.to_dicts()
    assert lines[0]["messages"][-1] == {"role": "assistant", "content": lines[0]["completion"]}
    ds = datasets.load_from_disk(str(paths["datasets"]))
    assert ds.num_rows == text.height and ds.column_names == text.columns  # no log-probabilities in either


def test_export_writes_the_logprobs_beside_when_asked(spec_file, tmp_path):
    merged = merged_frame(load_spec(spec_file))
    paths = export(merged, tmp_path / "exports", logprobs=True)
    assert paths["logprobs"] == tmp_path / "exports/training_set_logprobs.parquet"
    logprobs = pl.read_parquet(paths["logprobs"])
    lines = [json.loads(line) for line in paths["jsonl"].read_text().splitlines()]
    assert logprobs["row"].to_list() == list(range(len(lines)))
    assert logprobs["prompt_id"].to_list() == [line["prompt_id"] for line in lines]  # row i is line i
    full = merged.collect()
    assert logprobs.select("topk_ids", "topk_logprobs", "topk_tokens").equals(
        full.select("topk_ids", "topk_logprobs", "topk_tokens")
    )
    with pytest.raises(ValueError, match="no top-k log-probabilities"):
        export(full.drop("topk_ids", "topk_logprobs", "topk_tokens"), tmp_path / "none", logprobs=True)


@pytest.mark.parametrize(("teacher", "task"), [("teacher_a", "dates"), ("t-1", "a_task"), ("z", "b")])
def test_partition_key_strings_are_dagsters(teacher, task):
    import dagster as dg

    assert teacher_task_key(teacher, task) == str(dg.MultiPartitionKey({"teacher": teacher, "task": task}))


def test_chats_built_in_polars_are_chat_prompt_plus_the_answer():
    frame = pl.DataFrame(
        {"task": ["a", "b", "c", "a"], "prompt": ["2+2?", "Ünïcode «x»", "", "q"], "completion": ["4", "y", "z", ""]}
    )
    systems = {"a": "Answer with a number.", "b": None, "c": ""}
    built = frame.select(messages=chat_with_answer(systems))["messages"].to_list()
    expected = [
        [*chat_prompt(p, systems[t]), {"role": "assistant", "content": c}]
        for t, p, c in frame.select("task", "prompt", "completion").iter_rows()
    ]
    assert built == expected
    assert frame.select(messages=chat_with_answer(systems)).schema["messages"] == MESSAGES
