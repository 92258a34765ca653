"""Bad input files: every corruption either fails with file, line and field, or is quarantined and counted."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from distill_assets.inputs import (
    InputError,
    PromptBudget,
    curate,
    load_prompts,
    teacher_prompt_budget,
    write_quarantine,
)
from distill_assets.spec import TaskSpec
from tests.conftest import demo_rows

ROWS = demo_rows("reverse", "train", 40)
LONG = "Reverse the letters: " + "a" * 300

# name -> (raw line bytes, the field the message must name, or None for the whole row)
CORPUS: dict[str, tuple[bytes, str | None]] = {
    "malformed_json": (b'{"prompt": "Reverse the letters: abc", "answer": ', None),
    "not_an_object": (b'["Reverse the letters: abc", "cba"]', None),
    "non_utf8": (b'{"prompt": "Reverse the letters: \xff\xfeabc", "answer": "cba"}', None),
    "missing_prompt": (b'{"answer": "cba"}', "prompt"),
    "prompt_is_number": (b'{"prompt": 42, "answer": "cba"}', "prompt"),
    "prompt_is_list": (b'{"prompt": ["a"], "answer": "cba"}', "prompt"),
    "prompt_is_null": (b'{"prompt": null, "answer": "cba"}', "prompt"),
    "empty_prompt": (b'{"prompt": "", "answer": "cba"}', "prompt"),
    "whitespace_prompt": (b'{"prompt": " \\t \\n ", "answer": "cba"}', "prompt"),
    "answer_is_object": (b'{"prompt": "Reverse the letters: qqq", "answer": {"a": 1}}', "answer"),
    "answer_is_bool": (b'{"prompt": "Reverse the letters: qqq", "answer": true}', "answer"),
    "prompt_too_long": (json.dumps({"prompt": LONG, "answer": "x"}).encode(), "prompt"),
}


def _task(**kwargs) -> TaskSpec:
    return TaskSpec(name="reverse", source="x.jsonl", **kwargs)


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _good_lines(n: int) -> list[bytes]:
    return [json.dumps(r).encode() for r in ROWS[:n]]


BUDGET = PromptBudget(limit=120, count=len, owner="a test teacher")


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_each_bad_row_fails_naming_file_line_and_field(tmp_path, case):
    raw, field = CORPUS[case]
    path = _write(tmp_path / "train.jsonl", [*_good_lines(3), raw, *_good_lines(2)])
    with pytest.raises(InputError) as err:
        load_prompts(_task(), path, budget=BUDGET)
    message = str(err.value)
    assert f"{path}:4:" in message, message
    if field:
        assert f"field {field!r}" in message, message
    assert "on_bad_input: quarantine" in message


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_each_bad_row_is_quarantined_and_counted(tmp_path, case):
    raw, field = CORPUS[case]
    path = _write(tmp_path / "train.jsonl", [*_good_lines(3), raw, *_good_lines(2)])
    frame, bad, duplicates = load_prompts(_task(on_bad_input="quarantine"), path, budget=BUDGET)
    assert frame.height == 3 and duplicates == 2  # the last two lines repeat the first two
    assert [(b.line, b.field) for b in bad] == [(4, field)]
    out = write_quarantine(bad, tmp_path / "q" / "reverse.jsonl")
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["line"] == 4 and row["source"] == str(path) and row["problem"]


def test_duplicate_ids_and_exact_duplicates(tmp_path):
    lines = [
        b'{"id": "a", "prompt": "Reverse the letters: abc", "answer": "cba"}',
        b'{"id": "b", "prompt": "Reverse the letters: xyz", "answer": "zyx"}',
        b'{"id": "a", "prompt": "Reverse the letters: qrs", "answer": "srq"}',  # id reused: bad
        b'{"id": "c", "prompt": "Reverse the letters: abc", "answer": "cba"}',  # same prompt: counted duplicate
    ]
    path = _write(tmp_path / "train.jsonl", lines)
    with pytest.raises(InputError, match=r"train.jsonl:3: field 'id': id 'a' is already used on line 1"):
        load_prompts(_task(id_field="id"), path)
    frame, bad, duplicates = load_prompts(_task(id_field="id", on_bad_input="quarantine"), path)
    assert frame["prompt_id"].to_list() == ["a", "b"] and [b.line for b in bad] == [3] and duplicates == 1


def test_csv_with_undecodable_bytes(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"prompt,answer\nReverse the letters: abc,cba\nReverse the letters: \xffx,x\n")
    with pytest.raises(InputError, match=r"train.csv:3: field 'prompt': not valid UTF-8"):
        load_prompts(_task(), path)
    frame, bad, _ = load_prompts(_task(on_bad_input="quarantine"), path)
    assert frame.height == 1 and bad[0].line == 3 and "\\xff" in bad[0].raw


def test_a_column_missing_everywhere_is_a_spec_mismatch_even_when_quarantining(tmp_path):
    path = _write(tmp_path / "train.jsonl", [b'{"question": "a", "answer": "b"}'])
    with pytest.raises(InputError, match=r"no row has the field\(s\) \['prompt'\].*prompt_field"):
        load_prompts(_task(on_bad_input="quarantine"), path)


def test_prompt_longer_than_the_teachers_context(tmp_path, tiny_teacher):
    budget = teacher_prompt_budget(str(tiny_teacher), 4, lambda p: [{"role": "user", "content": p}], "teacher t")
    assert budget is not None and budget.limit == 128 - 4
    path = _write(tmp_path / "train.jsonl", [*_good_lines(2), json.dumps({"prompt": LONG, "answer": "x"}).encode()])
    with pytest.raises(InputError, match=r"train.jsonl:3: field 'prompt': is \d+ tokens; teacher t's context of 128"):
        load_prompts(_task(), path, budget=budget)


def test_eval_rows_without_reference_and_the_eval_split(tmp_path):
    train = _write(tmp_path / "train.jsonl", _good_lines(10))
    no_answer = b'{"prompt": "Reverse the letters: zzz"}'
    evals = _write(tmp_path / "eval.jsonl", [no_answer, b'{"prompt": "Reverse the letters: yyy", "answer": "yyy"}'])
    with pytest.raises(InputError, match=r"eval.jsonl:1: field 'answer': an eval prompt needs a reference"):
        curate(_task(), train, evals)
    shouted = {"prompt": "  REVERSE the letters:  " + ROWS[0]["prompt"][21:], "answer": "x"}
    evals = _write(tmp_path / "eval.jsonl", [json.dumps(shouted).encode()])
    train_frame, _, stats, bad = curate(_task(), train, evals)
    assert stats["eval_overlap_dropped"] == 1 and train_frame.height == 9 and not bad  # normalised overlap
    sample, _, _, _ = curate(_task(max_train_prompts=4), train, evals)
    assert sample["prompt"].to_list() == train_frame["prompt"].head(4).to_list()  # the first 4, in file order


# Property: random corruptions of a good file ---------------------------------------------------

CORRUPTIONS = [*sorted(CORPUS), "exact_duplicate", "blank_line"]
HAS_PROMPT = {None, "exact_duplicate", *(c for c in CORPUS if c.startswith(("prompt_", "answer_", "empty", "white")))}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.sampled_from([None, None, *CORRUPTIONS]), min_size=1, max_size=25))
def test_random_corruptions_are_all_counted(tmp_path_factory, plan):
    # With no row holding a prompt at all, the file and the spec disagree: that fails whatever the policy.
    assume(any(c in HAS_PROMPT for c in plan))
    tmp = tmp_path_factory.mktemp("corrupt")
    lines, expected_bad, expected_duplicates, rows = [], [], 0, 0
    for i, corruption in enumerate(plan):
        if corruption is None:
            lines.append(json.dumps(ROWS[i]).encode())
            rows += 1
        elif corruption == "blank_line":
            lines.append(b"   ")
        elif corruption == "exact_duplicate":
            lines.append(json.dumps(ROWS[0]).encode())
            expected_duplicates += 1
            rows += 1
        else:
            lines.append(CORPUS[corruption][0])
            expected_bad.append(i + 1)
            rows += 1
    path = _write(tmp / "train.jsonl", lines)
    first_good = plan.index(None) if None in plan else None
    # A duplicate of row 0 before row 0 appears (or with no row 0) is the first occurrence: kept, not counted.
    if first_good != 0:
        expected_duplicates -= 1 if "exact_duplicate" in plan else 0
    frame, bad, duplicates = load_prompts(_task(on_bad_input="quarantine"), path, budget=BUDGET)
    assert frame.height + len(bad) + duplicates == rows  # nothing dropped without a count
    assert [b.line for b in bad] == expected_bad
    assert duplicates == max(expected_duplicates, 0)
    if expected_bad:
        with pytest.raises(InputError) as err:
            load_prompts(_task(), path, budget=BUDGET)
        assert f"{path}:{expected_bad[0]}:" in str(err.value)
        assert f"{len(expected_bad)} bad row(s)" in str(err.value)


def _empty_parquet(path: Path) -> None:
    pl.DataFrame(schema={"prompt": pl.String, "answer": pl.String}).write_parquet(path)


def _empty_dataset(path: Path) -> None:
    datasets.Dataset.from_dict({"prompt": [], "answer": []}).save_to_disk(str(path))


def _empty_dataset_dict(path: Path) -> None:
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": [], "answer": []})}).save_to_disk(str(path))


# name -> writes a file (or a datasets directory) that holds no rows
EMPTY = {
    "empty.jsonl": lambda p: p.write_bytes(b""),
    "blank_lines.jsonl": lambda p: p.write_bytes(b"\n   \n\t\n"),
    "bom_only.jsonl": lambda p: p.write_bytes(b"\xef\xbb\xbf\n"),
    "empty.csv": lambda p: p.write_bytes(b""),
    "header_only.csv": lambda p: p.write_bytes(b"prompt,answer\n"),
    "header_only.parquet": _empty_parquet,
    "empty_dataset": _empty_dataset,
    "empty_dataset_dict": _empty_dataset_dict,
}


@pytest.mark.parametrize("name", sorted(EMPTY))
@pytest.mark.parametrize("on_bad_input", ["fail", "quarantine"])
def test_a_file_without_rows_fails_saying_so(tmp_path, name, on_bad_input):
    path = tmp_path / name
    EMPTY[name](path)
    with pytest.raises(InputError) as err:
        load_prompts(_task(on_bad_input=on_bad_input), path)
    message = str(err.value)
    assert message.startswith(f"{path}: has no rows"), message
    with pytest.raises(InputError, match="has no rows"):  # what the curated_inputs asset calls
        curate(_task(on_bad_input=on_bad_input), path, None)
