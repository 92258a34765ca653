"""Stage 2b: curated completions, one partition per (teacher, task): what is kept, what is dropped and why."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg
import polars as pl

from distill_assets.curation import RULES, Judge, JudgeVerdict, curate_partition, judge_scores, summary
from distill_assets.k8s_deploy import gpu_op_tags
from distill_assets.partitions import ROUTED_TAG, Partitions
from distill_assets.spec import Spec, TaskSpec
from distill_assets.tables import markdown_table
from distill_assets.verifiers import get_verifier
from resources.accelerator import Accelerator
from resources.cached_backend import CachedBackend
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
        **judge_placement(spec),
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
        with task_judge(spec, task, accelerator, store) as (judge, backend):
            bounds = (task.judge.threshold, task.judge.max_failed_fraction) if task.judge else (0.0, 0.0)
            curated, decided = curate_partition(
                synthetic_completions, curated_inputs, quality, verifier, judge, *bounds
            )
        # the judge's requests: asked, sent, answered from the cache, failed
        judge_stats = {f"judge/{k}": v for k, v in backend.stats.metadata().items()} if backend else {}
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
                "judge_failed": stats["judge_failed"],  # kept unjudged: the judge request failed
                **judge_stats,
                "curation": "on" if quality.curate else "off (quality.curate: false)",
                "dropped_examples": dg.MetadataValue.md(markdown_table(examples)),
            }
        )
        return curated  # streamed to its file by the IO manager, the top-k columns a chunk at a time

    return [curated_completions]


@contextmanager
def task_judge(
    spec: Spec, task: TaskSpec, accelerator: Accelerator, store: ArtifactStore
) -> Iterator[tuple[Judge | None, CachedBackend | None]]:
    """The task's judge and its backend, behind the generation cache (a rerun asks it nothing again), or Nones."""
    if not task.judge:
        yield None, None
        return
    judge_spec = task.judge
    with cached_teacher(spec.teacher(judge_spec.teacher), spec, accelerator, store.generation_cache_path()) as backend:

        def judge(prompts: Sequence[str], completions: Sequence[str]) -> list[JudgeVerdict]:
            return judge_scores(backend, prompts, completions, judge_spec)

        yield judge, backend


def judge_placement(spec: Spec) -> dict:
    """The `gpu` pool when a task has a judge (its model may load here, as generation's does); else none.

    On Kubernetes the step pod then requests a GPU unless every judge is an HTTP endpoint.
    """
    judges = [spec.teacher(t.judge.teacher) for t in spec.tasks if t.judge]
    if not judges:
        return {}
    return {"pool": "gpu", "op_tags": gpu_op_tags(0 if all(t.backend == "openai" for t in judges) else None)}
