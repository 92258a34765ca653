"""The whole graph on SmolLM2's real tokenizer and chat template: a chat teacher and a base teacher in
completion mode, and students with LoRA, offline logits and on-policy distillation, evaluated and reported."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import yaml
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from distill_assets.definitions import build_definitions
from distill_assets.generation import prompt_mode
from distill_assets.run import plan, run_pipeline, store_of
from distill_assets.spec import load_spec
from tests.conftest import SMOLLM2_VOCAB, shrunken_spec, without_chat_template

FEW_SHOT = "Reverse the letters: abc\nAnswer: cba\n\n{prompt}\nAnswer:"


def real_tokenizer_spec(tmp_path, tiny_smollm2, tiny_teacher):
    data = shrunken_spec(tmp_path, tiny_teacher)
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("dates", "reverse")]
    generation = {"max_new_tokens": 6, "batch_size": 8, "temperature": 1.0, "top_logprobs": 3}
    data["teachers"] = [
        {"name": "chat_teacher", "model": str(tiny_smollm2), "tasks": ["dates"], "generation": generation},
        {"name": "base_teacher", "model": str(without_chat_template(tiny_smollm2, tmp_path / "base_teacher")),
         "tasks": ["reverse"], "prompt_template": {"reverse": FEW_SHOT}, "generation": {**generation, "stop": ["\n"]}},
    ]  # fmt: skip
    training = {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 128, "logging_steps": 1}
    base = {"model": str(tiny_smollm2)}
    data["students"] = [
        {"name": "lora", "base": base, "method": "sft", "lora": {"r": 4, "alpha": 8}, "training": training},
        {"name": "logits", "base": base, "method": "offline_logits", "training": training},
        {"name": "on_policy", "base": base, "method": "on_policy", "on_policy": {"teacher": "chat_teacher"},
         "training": training},
    ]  # fmt: skip
    # A random model writes anything at all: the checks may not hold it to a trained teacher's standard.
    data["quality"] |= {"max_empty_rate": 1.0, "max_refusal_rate": 1.0, "max_leak_rate": 1.0,
                        "max_duplicate_rate": 1.0, "min_kept_rate": 0.0}  # fmt: skip
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_method_and_lora_through_the_graph_on_a_real_tokenizer(tmp_path, tiny_smollm2, tiny_teacher):
    path = real_tokenizer_spec(tmp_path, tiny_smollm2, tiny_teacher)
    spec = load_spec(path)
    assert prompt_mode(spec.teacher("base_teacher"), spec) == "completion"
    assert prompt_mode(spec.teacher("chat_teacher"), spec) == "chat"
    defs = build_definitions(path)
    with dg.DagsterInstance.ephemeral() as instance:
        ran = run_pipeline(defs, plan(path, defs=defs), instance, echo=lambda _: None)
    assert ran, "nothing ran"
    root = spec.storage_path()
    report = json.loads((root / "report" / "report.json").read_text())
    assert json.dumps(report).count('"lora"') >= 1 and "on_policy" in json.dumps(report)
    efficiency = pl.read_parquet(root / "frames" / "model_efficiency" / "data.parquet")
    assert set(efficiency["model"]) == {"chat_teacher", "base_teacher", "lora", "logits", "on_policy"}
    completions = pl.read_parquet(store_of(spec).frame_path("synthetic_completions", "reverse|base_teacher"))
    assert completions.height > 0 and not completions["completion"].str.contains("\n").any()  # cut at the stop
    for student in ("lora", "logits", "on_policy"):
        checkpoint = root / "checkpoints" / student
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        assert model.get_input_embeddings().weight.shape[0] == SMOLLM2_VOCAB
        with safe_open(checkpoint / "model.safetensors", "pt") as weights:
            assert not any("lora" in key for key in weights.keys())  # noqa: SIM118 (safe_open is not iterable); adapters merged into the weights
