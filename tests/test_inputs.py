import json

import datasets
import polars as pl
import pytest

from distill_assets.inputs import InputError, curate, dedup, normalise, prompt_id, read_table, split_eval
from distill_assets.spec import TaskSpec

ROWS = [
    {"question": "Reverse the letters: abc", "gold": "cba"},
    {"question": "Reverse the letters: abc", "gold": "cba"},  # exact duplicate
    {"question": "  Reverse the letters: xyz  ", "gold": "zyx"},
    {"question": "Reverse the letters: hello", "gold": "olleh"},
]
TASK = TaskSpec(name="reverse", source="x", prompt_field="question", reference_field="gold", eval_size=1)


@pytest.fixture(params=["jsonl", "parquet", "csv", "datasets"])
def source(request, tmp_path):
    frame = pl.DataFrame(ROWS)
    path = tmp_path / f"prompts.{request.param}"
    if request.param == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif request.param == "parquet":
        frame.write_parquet(path)
    elif request.param == "csv":
        frame.write_csv(path)
    else:
        path = tmp_path / "prompts_dataset"
        datasets.Dataset.from_polars(frame).save_to_disk(str(path))
    return path


def test_every_format_reads_to_the_same_prompts(source):
    frame = normalise(read_table(source), TASK, source)
    assert frame.columns == ["prompt_id", "task", "prompt", "reference"]
    assert frame["prompt"].to_list() == [
        "Reverse the letters: abc",
        "Reverse the letters: abc",
        "Reverse the letters: xyz",  # whitespace stripped
        "Reverse the letters: hello",
    ]
    assert frame["reference"].to_list() == ["cba", "cba", "zyx", "olleh"]


def test_prompt_ids_are_stable_and_task_scoped():
    assert prompt_id("reverse", "abc") == prompt_id("reverse", "abc")
    assert prompt_id("reverse", "abc") != prompt_id("dates", "abc")
    assert len(prompt_id("reverse", "abc")) == 16


def test_id_field_is_used_when_given(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": 7, "question": "q", "gold": "a"}) + "\n")
    task = TASK.model_copy(update={"id_field": "id"})
    assert normalise(read_table(path), task, path)["prompt_id"].to_list() == ["7"]


def test_dedup_counts_what_it_drops(source):
    frame, dropped = dedup(normalise(read_table(source), TASK, source))
    assert dropped == 1
    assert frame["prompt"].n_unique() == frame.height == 3


def test_split_is_stable_and_disjoint():
    frame = pl.DataFrame(
        {"prompt_id": [str(i) for i in range(50)], "task": "t", "prompt": [f"p{i}" for i in range(50)]}
    ).with_columns(reference=pl.lit("r"))
    train, held = split_eval(frame, 10)
    _, held2 = split_eval(frame.reverse(), 10)
    assert held.height == 10 and train.height == 40
    assert set(held["prompt_id"]) == set(held2["prompt_id"])
    assert not set(held["prompt_id"]) & set(train["prompt_id"])


def test_curate_removes_eval_prompts_from_training(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    held = tmp_path / "eval.jsonl"
    held.write_text(json.dumps({"question": "Reverse the letters: hello", "gold": "olleh"}) + "\n")
    train_frame, eval_frame, stats = curate(TASK, train, held)
    assert eval_frame["prompt"].to_list() == ["Reverse the letters: hello"]
    assert "Reverse the letters: hello" not in train_frame["prompt"].to_list()
    assert stats == {"duplicates_dropped": 1, "eval_overlap_dropped": 1}


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        read_table(tmp_path / "missing.jsonl")
    bad = tmp_path / "prompts.txt"
    bad.write_text("hello")
    with pytest.raises(InputError, match=r"prompts\.txt: unsupported input format"):
        read_table(bad)
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": "q"}) + "\n")
    with pytest.raises(InputError, match=r"p\.jsonl: missing column\(s\) \['question', 'gold'\]"):
        normalise(read_table(path), TASK, path)
    path.write_text(json.dumps({"question": "   ", "gold": "a"}) + "\n")
    with pytest.raises(InputError, match="1 empty prompt"):
        normalise(read_table(path), TASK, path)
