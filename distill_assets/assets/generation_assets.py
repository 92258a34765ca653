"""Stage 2: synthetic completions, one partition per (teacher, task)."""

import dagster as dg
import polars as pl

from distill_assets.assets.progress import generation_logger
from distill_assets.frames import scan_parquet
from distill_assets.generation import prompt_mode, summed, write_completions
from distill_assets.k8s_deploy import gpu_op_tags
from distill_assets.partitions import ROUTED_TAG, Partitions
from distill_assets.pipes_generation import generate_in_pod
from distill_assets.spec import Spec, TeacherSpec
from distill_assets.staleness import TEACHER_SPEC
from distill_assets.tables import markdown_table
from distill_assets.versions import frame_version
from resources.accelerator import Accelerator
from resources.storage import ArtifactStore, partition_file_stem
from resources.teachers import cached_teacher


def build(spec: Spec, partitions: Partitions) -> list:
    @dg.asset(
        description="A teacher's completions (n per prompt) for one task's curated prompts, with lineage columns.",
        partitions_def=partitions.teacher_task,
        ins={
            "curated_inputs": dg.AssetIn(
                partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="task")
            )
        },
        # The teacher's spec version: editing one teacher makes only its partitions stale.
        deps=[dg.AssetDep(TEACHER_SPEC, partition_mapping=dg.MultiToSingleDimensionPartitionMapping("teacher"))],
        group_name="generation",
        tags=ROUTED_TAG,  # the headless run generates the routed teacher x task partitions only
        kinds={"pytorch", "huggingface", "polars"},
        pool="gpu",
        # on Kubernetes the step pod requests nvidia.com/gpu, unless every teacher generates elsewhere
        op_tags=gpu_op_tags(0 if all(t.k8s or t.backend == "openai" for t in spec.teachers) else None),
    )
    def synthetic_completions(
        context: dg.AssetExecutionContext, accelerator: Accelerator, store: ArtifactStore, curated_inputs: pl.DataFrame
    ) -> dg.Output[pl.LazyFrame]:  # an Output: a step that used Dagster Pipes must not return a bare value
        """Answers come from the generation cache where it has them; only the rest reach the teacher."""
        keys = context.partition_key.keys_by_dimension
        teacher, task = spec.teacher(keys["teacher"]), spec.task(keys["task"])
        where = "" if teacher.backend == "openai" else f" on {accelerator.describe()}"
        context.log.info(
            f"{teacher.name} ({teacher.backend}) on {task.name}: {curated_inputs.height} prompts"
            f" x {teacher.generation.n}{where}"
        )
        if teacher.k8s is not None:  # in a GPU pod of its own, through Dagster's PipesK8sClient
            return generate_in_pod(context, teacher, task, store)
        report = generation_logger(context, f"{teacher.name}/{task.name}")
        staged = store.path("staging", "synthetic_completions", f"{partition_file_stem(context.partition_key)}.parquet")
        chunk_stats: list[dict] = []  # the cached backend counts per call, and each chunk is one call
        with cached_teacher(teacher, spec, accelerator, store.generation_cache_path(), report) as backend:
            write_completions(
                backend, curated_inputs, teacher, task, staged, mode=prompt_mode(teacher, spec),
                on_chunk=lambda _: chunk_stats.append(backend.stats.metadata()),
            )  # fmt: skip
        context.add_output_metadata(completions_metadata(pl.scan_parquet(staged), teacher, chunk_stats))
        # Streamed to the store by the IO manager, a row group at a time; the staged file stays until the
        # partition's next run writes over it. The content is the data version: a regeneration that gives
        # the same completions leaves everything downstream fresh.
        frame = scan_parquet(staged)
        return dg.Output(frame, data_version=dg.DataVersion(frame_version(frame)))

    return [synthetic_completions]


def completions_metadata(completions: pl.LazyFrame, teacher: TeacherSpec, chunk_stats: list[dict]) -> dict:
    """The asset's metadata, read from the written completions and the backend's counts summed over chunks."""
    stats = summed(chunk_stats)
    counts = completions.select(
        completions=pl.len(),
        truncated=(pl.col("finish_reason") == "length").sum(),
        generated_tokens=pl.col("num_tokens").sum(),
    ).collect()
    tokens = int(counts["generated_tokens"][0] or 0)
    failed = completions.filter(pl.col("error").is_not_null()).select("prompt", "error").head(5).collect()
    preview = completions.select("prompt", "completion").head(5).collect()
    return {
        "teacher_version": teacher.version(),
        "backend": teacher.backend,
        "completions": int(counts["completions"][0]),
        **stats,
        "seconds": round(stats.get("seconds", 0.0), 2),
        "truncated": int(counts["truncated"][0]),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / max(stats.get("seconds", 0.0), 1e-9), 1),
        "preview": dg.MetadataValue.md(markdown_table(preview)),
        **({"failures": dg.MetadataValue.md(markdown_table(failed))} if failed.height else {}),
    }
