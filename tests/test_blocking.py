"""Blocking checks: a teacher that emits garbage fails its check and no student is retrained on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
import yaml
from transformers import LlamaForCausalLM

from distill_assets.assets import quality_checks
from distill_assets.definitions import build_definitions
from distill_assets.demo.tiny_models import build_tokenizer, llama_config
from distill_assets.partitions import Partitions
from distill_assets.run import plan, run_pipeline
from distill_assets.spec import load_spec

TRAINING = {"curated_inputs", "synthetic_completions", "curated_completions", "training_set", "student_checkpoint"}


def training_steps(spec_file):
    return [(keys, parts) for keys, parts in plan(spec_file) if TRAINING & set(keys)]


@pytest.fixture(scope="session")
def broken_teacher(tmp_path_factory) -> Path:
    """A deliberately broken teacher: its final norm is zeroed, so every logit is 0 and greedy
    decoding emits the padding token forever: every completion decodes to the empty string."""
    path = tmp_path_factory.mktemp("models") / "broken_teacher"
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(llama_config(tokenizer, hidden_size=32, num_hidden_layers=1))
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _materializations(instance: dg.DagsterInstance, asset: str) -> int:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    return len(records)


def test_garbage_teacher_is_blocked_and_the_student_checkpoint_is_kept(spec_file, broken_teacher):
    spec = load_spec(spec_file)
    root = spec.storage_path()
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(build_definitions(spec_file), training_steps(spec_file), instance, echo=lambda _: None)
        weights = root / "checkpoints/student_m/model.safetensors"
        before = (_digest(weights), weights.stat().st_mtime_ns, _digest(root / "frames/training_set/data.parquet"))
        counts = {a: _materializations(instance, a) for a in ("training_set", "student_checkpoint")}
        assert counts == {"training_set": 1, "student_checkpoint": 2}

        raw = yaml.safe_load(spec_file.read_text())
        teacher_b = next(t for t in raw["teachers"] if t["name"] == "teacher_b")
        teacher_b["model"] = str(broken_teacher)
        teacher_b["generation"] = {**teacher_b["generation"], "temperature": 0.0}  # the dict is shared in the yaml
        spec_file.write_text(yaml.safe_dump(raw))

        with pytest.raises(SystemExit) as stopped:
            run_pipeline(build_definitions(spec_file), training_steps(spec_file), instance, echo=lambda _: None)
        message = str(stopped.value)
        assert "synthetic_completions[reverse|teacher_b]" in message
        assert "synthetic_completions:non_empty_completions" in message and "duplicate_rate" in message

        garbage = pl.read_parquet(root / "frames/synthetic_completions/reverse__teacher_b.parquet")
        assert set(garbage["completion"]) == {""}  # the teacher did emit garbage
        after = (_digest(weights), weights.stat().st_mtime_ns, _digest(root / "frames/training_set/data.parquet"))
        assert after == before
        assert {a: _materializations(instance, a) for a in counts} == counts


def test_failing_check_skips_downstream_in_the_same_run(spec_file):
    raw = yaml.safe_load(spec_file.read_text())
    next(t for t in raw["tasks"] if t["name"] == "reverse")["verifier"] = "distill_assets.demo.verifiers:reverse"
    spec_file.write_text(yaml.safe_dump(raw))
    defs = build_definitions(spec_file)
    everything, resources = [*defs.assets, *defs.asset_checks], dict(defs.resources)
    with dg.DagsterInstance.ephemeral() as instance:
        dg.materialize(
            everything, selection=["curated_inputs", "eval_set", "dev_set"], partition_key="reverse", instance=instance,
            resources=resources,
        )  # fmt: skip
        result = dg.materialize(
            everything,
            resources=resources,
            selection=["synthetic_completions", "curated_completions"],
            partition_key="reverse|teacher_b",
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
        assert failed == {"verifier_pass_rate"}  # a random model does not reverse words
        assert instance.get_latest_materialization_event(dg.AssetKey("synthetic_completions")) is not None
        assert instance.get_latest_materialization_event(dg.AssetKey("curated_completions")) is None


def test_contamination_guard(spec_file):
    spec = load_spec(spec_file)
    checks = {c.check_specs_by_output_name and next(iter(c.check_keys)).name: c for c in quality_checks.build(
        spec, Partitions.from_spec(spec))}  # fmt: skip
    guard = checks["no_eval_prompts_in_training"]
    training = pl.DataFrame({"prompt": ["Reverse the letters: abc", "Reverse the letters: xyz"]})
    clean = guard(
        training_set=training.lazy(), eval_set={"reverse": pl.DataFrame({"prompt": ["Reverse the letters: qqq"]})}
    )
    leaked = guard(
        training_set=training.lazy(), eval_set={"reverse": pl.DataFrame({"prompt": ["  reverse THE letters: xyz"]})}
    )
    assert clean.passed and not leaked.passed
    assert leaked.metadata["contaminated_rows"].value == 1
