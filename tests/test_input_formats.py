"""Every supported input format reads to the same prompts; ids are stable; the eval split is stable."""

import json

import datasets
import polars as pl
import pytest

from distill_assets.inputs import curate, load_prompts, prompt_id, split_eval
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
    frame, bad, duplicates = load_prompts(TASK, source)
    assert frame.columns == ["prompt_id", "task", "prompt", "reference"]
    assert frame["prompt"].to_list() == [
        "Reverse the letters: abc",
        "Reverse the letters: xyz",  # whitespace stripped
        "Reverse the letters: hello",
    ]
    assert frame["reference"].to_list() == ["cba", "zyx", "olleh"]
    assert (bad, duplicates) == ([], 1)
    assert frame["prompt_id"].to_list() == [prompt_id("reverse", p) for p in frame["prompt"]]


def test_prompt_ids_are_stable_and_task_scoped():
    assert prompt_id("reverse", "abc") == prompt_id("reverse", "abc")
    assert prompt_id("reverse", "abc") != prompt_id("dates", "abc")
    assert len(prompt_id("reverse", "abc")) == 16


def test_id_field_is_used_when_given(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": 7, "question": "q", "gold": "a"}) + "\n")
    task = TASK.model_copy(update={"id_field": "id"})
    assert load_prompts(task, path)[0]["prompt_id"].to_list() == ["7"]


def test_split_is_stable_and_disjoint():
    frame = pl.DataFrame(
        {"prompt_id": [str(i) for i in range(50)], "task": "t", "prompt": [f"p{i}" for i in range(50)]}
    ).with_columns(reference=pl.lit("r"))
    train, held = split_eval(frame, 10)
    _, held2 = split_eval(frame.reverse(), 10)
    assert held.height == 10 and train.height == 40
    assert set(held["prompt_id"]) == set(held2["prompt_id"])


def test_split_is_a_fixed_function_of_the_prompt_ids():
    """sha256 of each id decides: these assignments hold in every polars version, whatever the row order."""
    ids = ["dates-0001", "dates-0002", "reverse-17", "units-3", "a", "b"]
    frame = pl.DataFrame({"prompt_id": ids, "task": "t", "prompt": ids, "reference": "r"})
    for order in (frame, frame.reverse(), frame.sort("prompt_id")):
        train, held = split_eval(order, 2)
        assert held["prompt_id"].to_list() == ["b", "units-3"]
        assert sorted(train["prompt_id"]) == ["a", "dates-0001", "dates-0002", "reverse-17"]
    _, held = split_eval(pl.DataFrame({"prompt_id": [str(i) for i in range(10)], "prompt": "p"}), 3)
    assert held["prompt_id"].to_list() == ["9", "8", "4"]
    assert not set(held["prompt_id"]) & set(train["prompt_id"])


def test_curate_without_eval_source_holds_out_eval_size(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"Reverse the letters: w{i}", "gold": "x"}) + "\n" for i in range(30))
    )
    train, held, stats, bad = curate(TASK.model_copy(update={"eval_size": 5}), path, None)
    assert (train.height, held.height, bad) == (25, 5, [])
    assert stats["duplicates_dropped"] == 0


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path, suffix):
    """Spreadsheets and Windows editors start UTF-8 files with a BOM: the first row must still read."""
    plain, marked = tmp_path / f"plain.{suffix}", tmp_path / f"marked.{suffix}"
    if suffix == "jsonl":
        plain.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        pl.DataFrame(ROWS).write_csv(plain)
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    frame, bad, duplicates = load_prompts(TASK, marked)
    assert (bad, duplicates) == ([], 1)
    assert frame["prompt"].to_list()[0] == "Reverse the letters: abc"
    assert frame.equals(load_prompts(TASK, plain)[0])
