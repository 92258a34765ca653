"""Student training through Dagster Pipes: `torchrun` with 2 data-parallel processes (gloo, CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from transformers import AutoModelForCausalLM

from distill_assets.definitions import build_definitions
from distill_assets.pipes_training import launch_command
from distill_assets.spec import LauncherSpec, load_spec
from distill_assets.versions import checkpoint_version, read_lineage
from tests.conftest import demo_rows, shrunken_spec


def demo_training_set(rows: int = 96) -> pl.DataFrame:
    """The tiny demo's reverse task with its reference answers as the completions."""
    examples = demo_rows("reverse", "train", rows)
    return pl.DataFrame(
        {
            "task": "reverse",
            "prompt_id": [f"reverse-{i}" for i in range(rows)],
            "teacher": "teacher_b",
            "teacher_version": "v",
            "prompt": [e["prompt"] for e in examples],
            "completion": [e["answer"] for e in examples],
            "messages": [
                [{"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": e["answer"]}]
                for e in examples
            ],
        }
    )


def pipes_spec(tmp_path: Path, teacher: Path, launcher: dict, steps: int = 8, batch: int = 8) -> Path:
    data = shrunken_spec(tmp_path, teacher)
    training = {"max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 0.01,
                "logging_steps": 1, "max_length": 64, "warmup_ratio": 0.0}  # fmt: skip
    arch = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    data["students"] = [
        {"name": "student_m", "base": {"architecture": arch, "tokenizer": str(teacher)}, "training": training,
         "launcher": launcher}
    ]  # fmt: skip
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def materialize_checkpoint(spec_path: Path) -> dg.MaterializeResult:
    defs = build_definitions(spec_path)
    store = defs.resources["store"]
    frame_path = store.frame_path("training_set")
    frame_path.parent.mkdir(parents=True, exist_ok=True)
    demo_training_set().write_parquet(frame_path)  # the upstream asset, as the IO manager stores it
    assets = [a for a in defs.assets if dg.AssetKey("student_checkpoint") in getattr(a, "keys", ())]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*assets, dg.AssetSpec("training_set")],
            selection=[dg.AssetKey("student_checkpoint")],
            partition_key="student_m",
            resources=dict(defs.resources),
            instance=instance,
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("student_checkpoint"))
        return event.asset_materialization.metadata


@pytest.mark.parametrize("kind", ["torchrun", "accelerate"])
def test_two_process_gloo_training_through_pipes(tmp_path, tiny_teacher, kind):
    spec_path = pipes_spec(tmp_path, tiny_teacher, {"kind": kind, "nproc_per_node": 2})
    metadata = materialize_checkpoint(spec_path)

    assert metadata["world_size"].value == 2
    assert metadata["backend"].value == "gloo"
    assert metadata["final_loss"].value < metadata["first_loss"].value  # it learned
    checkpoint = Path(metadata["path"].value)
    assert checkpoint == load_spec(spec_path).storage_path() / "checkpoints/student_m"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert model.config.hidden_size == 32
    assert (checkpoint / "README.md").is_file() and not checkpoint.with_name("student_m.tmp").exists()
    lineage = read_lineage(checkpoint)  # written by rank 0 inside the checkpoint, before the swap
    assert lineage["checkpoint_version"] == metadata["checkpoint_version"].value == checkpoint_version(checkpoint)


@pytest.mark.parametrize(
    ("kind", "device", "expected"),
    [
        ("torchrun", "cpu", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]),
        ("accelerate", "cuda", ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4"]),
        ("accelerate", "cpu", ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4"]),
    ],
)
def test_launch_commands(kind, device, expected):
    command = launch_command(LauncherSpec(kind=kind, nproc_per_node=4), device, ["--student", "s"])
    assert command[0] == sys.executable
    assert command[1 : 1 + len(expected)] == expected
    assert command[-5:] == ["distill_assets.train_entrypoint", "--student", "s", "--device", device]


def test_in_process_launcher_is_the_default(spec_file):
    assert all(s.launcher.kind == "in_process" for s in load_spec(spec_file).students)


def test_one_process_accelerate_on_cpu_uses_its_cpu_flag():
    command = launch_command(LauncherSpec(kind="accelerate", nproc_per_node=1), "cpu", [])
    assert "--cpu" in command and "--multi_gpu" not in command
