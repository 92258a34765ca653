"""Stage 1: curated inputs and the held-out eval set, per task."""

import dagster as dg
import polars as pl

from distill_assets.inputs import curate
from distill_assets.partitions import Partitions
from distill_assets.spec import Spec
from distill_assets.tables import markdown_table


def build(spec: Spec, partitions: Partitions) -> list:
    @dg.multi_asset(
        outs={
            "curated_inputs": dg.AssetOut(
                description="A task's training prompts: one schema, stable prompt ids, exact duplicates dropped.",
                kinds={"polars"},
            ),
            "eval_set": dg.AssetOut(
                description="A task's held-out eval prompts with references, disjoint from the training prompts.",
                kinds={"polars"},
            ),
        },
        partitions_def=partitions.task,
        group_name="data",
    )
    def curated_inputs(context: dg.AssetExecutionContext):
        task = spec.task(context.partition_key)
        source = spec.resolve_path(task.source)
        eval_source = spec.resolve_path(task.eval_source) if task.eval_source else None
        train, held, stats = curate(task, source, eval_source)
        context.log.info(f"{task.name}: {train.height} training prompts, {held.height} eval prompts, {stats}")
        yield dg.Output(train, "curated_inputs", metadata={"source": str(source), **stats, **_preview(train)})
        yield dg.Output(held, "eval_set", metadata={"source": str(eval_source or source), **_preview(held)})

    return [curated_inputs]


def _preview(frame: pl.DataFrame) -> dict:
    return {"preview": dg.MetadataValue.md(markdown_table(frame.head(5)))}
