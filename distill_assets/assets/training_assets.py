"""Stage 3: the merged training set, and the student checkpoints trained on it."""

import dagster as dg
import polars as pl

from distill_assets.assets.routing_assets import routed_completions, routed_inputs
from distill_assets.curation import ACROSS_RULES, dedup_across, kept
from distill_assets.k8s_deploy import gpu_op_tags
from distill_assets.partitions import Partitions
from distill_assets.pipes_training import train_with_pipes
from distill_assets.spec import Spec
from distill_assets.tables import markdown_table
from distill_assets.training import train_student
from distill_assets.training_set import export, merge_routed
from distill_assets.versions import frame_version, read_lineage, teacher_versions_in
from resources.accelerator import Accelerator
from resources.storage import ArtifactStore

EXPORT_KEYS = {"jsonl": "chat_jsonl", "datasets": "datasets_dir", "logprobs": "logprobs_parquet"}  # metadata names


CHECKPOINT = "student_checkpoint"


def build(spec: Spec, partitions: Partitions) -> list:
    stages = range(1, len(partitions.student_stages) + 1)
    return [training_set_asset(spec), *(student_checkpoint_asset(spec, partitions, stage) for stage in stages)]


def checkpoint_key(stage: int) -> dg.AssetKey:
    """The asset holding the checkpoints of one stage's students: `student_checkpoint` for those built from a
    model or an architecture, `student_checkpoint_stage2` for the students built on those, and so on.

    A staged student's checkpoint depends on its base student's, and Dagster lets a partition
    depend on another partition of the same asset only along time: so each stage is an asset.
    """
    return dg.AssetKey(CHECKPOINT if stage == 1 else f"{CHECKPOINT}_stage{stage}")


def checkpoint_deps(spec: Spec, every_partition: bool = False) -> list[dg.AssetDep]:
    """Every stage's checkpoint asset as the deps of an asset partitioned by student: each student's own
    checkpoint and, for a staged student, its base student's too (the model it starts from); or with
    `every_partition`, for an unpartitioned asset, all of them."""
    deps = []
    for stage, names in enumerate(spec.students_by_stage(), start=1):
        staged_on = {n: {s.name for s in spec.students if s.base.student == n} for n in names}
        mapping = (
            dg.AllPartitionMapping()
            if every_partition
            else dg.StaticPartitionMapping({n: {n, *staged_on[n]} for n in names})
        )
        deps.append(dg.AssetDep(checkpoint_key(stage), partition_mapping=mapping))
    return deps


def training_set_asset(spec: Spec) -> dg.AssetsDefinition:
    ins, deps = routed_inputs(spec)

    @dg.asset(
        description="Each task's curated completions from its routed teacher (routing_table), duplicates across "
        "teachers removed, as chat messages with lineage columns and the teachers' top-k log-probabilities.",
        ins=ins,
        deps=deps,
        group_name="training",
        kinds={"polars", "huggingface"},
    )
    def training_set(context: dg.AssetExecutionContext, store: ArtifactStore, **inputs) -> dg.Output[pl.LazyFrame]:
        """Lazily merged and streamed to its file by the IO manager: the top-k columns a chunk at a time."""
        routing, curated_completions = routed_completions(spec, store, inputs)
        merged = merge_routed({key: kept(frame) for key, frame in curated_completions.items()}, spec, routing)
        frame, dropped = dedup_across(merged, spec.quality)
        exported = export(frame, store.path("exports"), logprobs=spec.exports.logprobs)
        per_task = frame.group_by("task", "teacher").len().sort("task").collect()
        context.add_output_metadata(
            {
                "rows": int(per_task["len"].sum()),
                **{f"dropped/{rule}": dropped.filter(pl.col("dropped_by") == rule).height for rule in ACROSS_RULES},
                "per_task": dg.MetadataValue.md(markdown_table(per_task)),
                **{EXPORT_KEYS[name]: dg.MetadataValue.path(str(path)) for name, path in exported.items()},
                "teacher_versions": dg.MetadataValue.json(teacher_versions_in(frame)),
                # Dagster's staleness does not notice a partition dropped from a mapping; the backfill reads this.
                "routed_partitions": dg.MetadataValue.json(sorted(curated_completions)),
            }
        )
        return dg.Output(frame, data_version=dg.DataVersion(frame_version(frame)))  # hashed a chunk at a time

    return training_set


def student_checkpoint_asset(spec: Spec, partitions: Partitions, stage: int = 1) -> dg.AssetsDefinition:
    """The checkpoints of one stage's students (see checkpoint_key); from stage 2 on, each student starts from
    the checkpoint of the student it builds on, the stage before's partition that it depends on."""
    partitions_def = partitions.student_stages[stage - 1]
    names = partitions_def.get_partition_keys()
    # the student's spec: editing it makes only its checkpoint stale
    deps = [dg.AssetDep("student_spec", partition_mapping=dg.StaticPartitionMapping({n: n for n in names}))]
    description = "A student fine-tuned on the training set: a Hugging Face checkpoint directory with a model card."
    if stage > 1:
        bases: dict[str, set[str]] = {}
        for name in names:
            bases.setdefault(spec.student(name).base.student, set()).add(name)
        deps.append(dg.AssetDep(checkpoint_key(stage - 1), partition_mapping=dg.StaticPartitionMapping(bases)))
        description = (
            f"A staged student (stage {stage}) fine-tuned on the training set from the checkpoint of the student it "
            f"builds on ({checkpoint_key(stage - 1).to_user_string()}): a Hugging Face checkpoint directory."
        )

    @dg.asset(
        key=checkpoint_key(stage),
        description=description,
        partitions_def=partitions_def,
        ins={"training_set": dg.AssetIn()},
        deps=deps,
        group_name="training",
        kinds={"pytorch", "huggingface"},
        pool="gpu",
        # on Kubernetes the step pod requests nvidia.com/gpu: one per torchrun process
        op_tags=gpu_op_tags(max(spec.student(n).launcher.nproc_per_node for n in names)),
    )
    def student_checkpoint(
        context: dg.AssetExecutionContext, accelerator: Accelerator, store: ArtifactStore, training_set: pl.LazyFrame
    ) -> dg.MaterializeResult:
        student = spec.student(context.partition_key)
        out_dir = store.checkpoint_dir(student.name, fetch=False)
        # a staged student's starting point: its base student's checkpoint, fetched when the store is remote
        base_dir = store.checkpoint_dir(student.base.student) if student.base.student else None
        context.log.info(
            f"training {student.name} ({student.method}) on {training_set.select(pl.len()).collect().item()} rows, "
            f"{accelerator.describe()}" + (f", from student {student.base.student}'s checkpoint" if base_dir else "")
        )
        device = accelerator.torch_device()
        if student.launcher.kind != "in_process":  # torchrun / accelerate launch, through Dagster Pipes
            result = train_with_pipes(context, student, spec, training_set, out_dir, device.type, base_dir=base_dir)
            trained = dict(result.metadata or {})  # what rank 0 reported: losses, time, world size, path
        else:
            metrics = train_student(student, spec, training_set, out_dir, device, context.log.info, base_dir=base_dir)
            keys = ("parameters", "first_loss", "final_loss", "train_seconds", "peak_memory_mb", "steps")
            trained = {"path": dg.MetadataValue.path(str(out_dir)), **{k: metrics[k] for k in keys}}
        # Both paths write the lineage inside the checkpoint before it is swapped in (training.py),
        # so it is published with it.
        lineage = read_lineage(out_dir)
        if lineage is None:
            raise FileNotFoundError(f"student_checkpoint: {out_dir} has no lineage file after training")
        if base_dir is not None:
            trained["base_student"] = student.base.student
            trained["base_checkpoint_version"] = (read_lineage(base_dir) or {}).get("checkpoint_version") or ""
        return dg.MaterializeResult(
            data_version=dg.DataVersion(lineage["checkpoint_version"]),
            metadata={
                **trained,
                "checkpoint_version": lineage["checkpoint_version"],
                "training_set_version": lineage["training_set_version"],
                "stored_at": dg.MetadataValue.path(store.publish_checkpoint(student.name)),
                "method": student.method_label(),
            },
        )

    return student_checkpoint
