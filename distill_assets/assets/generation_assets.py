"""Stage 2: synthetic completions, one partition per (teacher, task)."""

import time

import dagster as dg
import polars as pl

from distill_assets.assets.progress import progress_logger
from distill_assets.generation import generate_samples
from distill_assets.partitions import Partitions
from distill_assets.spec import Spec
from distill_assets.tables import markdown_table
from resources.accelerator import Accelerator
from resources.transformers_backend import TransformersBackend


def build(spec: Spec, partitions: Partitions) -> list:
    @dg.asset(
        description="A teacher's completions (`samples` per prompt) for one task's curated prompts, with lineage.",
        partitions_def=partitions.teacher_task,
        ins={
            "curated_inputs": dg.AssetIn(
                partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="task")
            )
        },
        group_name="generation",
        kinds={"pytorch", "huggingface", "polars"},
        pool="gpu",
    )
    def synthetic_completions(
        context: dg.AssetExecutionContext, accelerator: Accelerator, curated_inputs: pl.DataFrame
    ) -> pl.DataFrame:
        keys = context.partition_key.keys_by_dimension
        teacher, task = spec.teacher(keys["teacher"]), spec.task(keys["task"])
        context.log.info(f"{teacher.name} on {task.name}: {curated_inputs.height} prompts on {accelerator.describe()}")
        backend = TransformersBackend.load(
            spec.resolve(teacher.model),
            accelerator.torch_device(),
            accelerator.torch_dtype(),
            batch_size=teacher.generation.batch_size,
            revision=teacher.revision,
        )
        started = time.time()
        try:
            frame = generate_samples(
                backend, curated_inputs, teacher, task, progress_logger(context, f"{teacher.name}/{task.name}")
            )
        finally:
            backend.close()
        seconds = time.time() - started
        tokens = int(frame["num_tokens"].sum())
        context.add_output_metadata(
            {
                "teacher_version": teacher.version(),
                "completions": frame.height,
                "truncated": int((frame["finish_reason"] == "length").sum()),
                "generated_tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                "preview": dg.MetadataValue.md(markdown_table(frame.select("prompt", "completion").head(5))),
            }
        )
        return frame

    return [synthetic_completions]
