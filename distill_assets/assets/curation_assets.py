"""Stage 2b: curated completions, one partition per (teacher, task): what is kept, what is dropped and why."""

from contextlib import ExitStack

import dagster as dg
import polars as pl

from distill_assets.curation import RULES, curate_partition, judge_scores, summary
from distill_assets.partitions import ROUTED_TAG, Partitions
from distill_assets.spec import Spec
from distill_assets.tables import markdown_table
from distill_assets.verifiers import get_verifier
from resources.accelerator import Accelerator
from resources.storage import ArtifactStore
from resources.teachers import cached_teacher


def build(spec: Spec, partitions: Partitions) -> list:
    @dg.asset(
        description="A teacher's completions for one task, each marked kept or dropped by curation (empty, "
        "truncated, refusal, template leak, verifier, judge, exact or near duplicate) with the reason.",
        partitions_def=partitions.teacher_task,
        ins={
            "synthetic_completions": dg.AssetIn(),
            "curated_inputs": dg.AssetIn(
                partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="task")
            ),
        },
        group_name="curation",
        tags=ROUTED_TAG,  # curated for the training set: the routed teacher x task partitions only
        kinds={"polars"},
    )
    def curated_completions(
        context: dg.AssetExecutionContext,
        accelerator: Accelerator,
        store: ArtifactStore,
        synthetic_completions: pl.LazyFrame,
        curated_inputs: pl.DataFrame,
    ) -> pl.LazyFrame:
        keys = context.partition_key.keys_by_dimension
        teacher, task = spec.teacher(keys["teacher"]), spec.task(keys["task"])
        quality = spec.quality_for(task.name)
        verifier = get_verifier(task.verifier) if task.verifier else None
        with ExitStack() as stack:
            judge = None
            if task.judge:  # through the generation cache: a rerun asks the judge nothing again
                cache = store.generation_cache_path()
                backend = stack.enter_context(
                    cached_teacher(spec.teacher(task.judge.teacher), spec, accelerator, cache)
                )

                def judge(prompts, completions):
                    return judge_scores(backend, prompts, completions, task.judge)

            threshold = task.judge.threshold if task.judge else 0.0
            curated, decided = curate_partition(
                synthetic_completions, curated_inputs, quality, verifier, judge, threshold
            )
        stats = summary(decided)
        context.log.info(
            f"{teacher.name}/{task.name}: kept {stats['kept']} of {stats['generated']}, {stats['dropped']}"
        )
        examples = pl.DataFrame(stats["examples"]) if stats["examples"] else pl.DataFrame({"rule": []})
        context.add_output_metadata(
            {
                "generated": stats["generated"],
                "kept": stats["kept"],
                **{f"dropped/{rule}": stats["dropped"][rule] for rule in RULES},
                "verifier_pass_rate": stats["verifier_pass_rate"],
                "curation": "on" if quality.curate else "off (quality.curate: false)",
                "dropped_examples": dg.MetadataValue.md(markdown_table(examples)),
            }
        )
        return curated  # streamed to its file by the IO manager, the top-k columns a chunk at a time

    return [curated_completions]
