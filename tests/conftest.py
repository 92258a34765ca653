"""Shared fixtures: a tiny random teacher checkpoint and a shrunken demo spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.shrunken import TASKS as TASKS  # tests import the demo's task names from here
from distill_assets.demo.shrunken import shrunken_spec as demo_shrunken_spec
from distill_assets.demo.tiny_models import build_tokenizer, llama_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """An untrained one-layer Llama with the demo tokenizer, saved as a HF checkpoint.

    Special-token embeddings are zeroed (the head is tied), so it writes characters rather
    than ending at once: with the spec's sampling, its completions are non-empty and varied,
    and pass the quality checks that do not need right answers.
    """
    path = tmp_path_factory.mktemp("models") / "tiny_teacher"
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(tokenizer, hidden_size=32, num_hidden_layers=1))
    with torch.no_grad():
        model.model.embed_tokens.weight[tokenizer.all_special_ids] = 0.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def demo_rows(task: str, split: str, n: int) -> list[dict]:
    lines = (DATA_DIR / f"{task}_{split}.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


def shrunken_spec(root: Path, teacher: Path, train: int = 12, eval_: int = 4, steps: int = 2) -> dict:
    """The demo's shape (2 teachers, 3 tasks, 2 students) with `teacher` standing in, at a size that runs in seconds."""
    return demo_shrunken_spec(root, train, eval_, steps, teacher=teacher)


@pytest.fixture
def spec_file(tmp_path: Path, tiny_teacher: Path) -> Path:
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(shrunken_spec(tmp_path, tiny_teacher)))
    return path
