"""Stage 1: curated inputs and the held-out eval set, per task."""

import dagster as dg
import polars as pl

from distill_assets.generation import prompt_mode, teacher_prompt
from distill_assets.inputs import curate, problem_counts, split_eval, teacher_prompt_budget, write_quarantine
from distill_assets.partitions import Partitions
from distill_assets.routing import Routing
from distill_assets.spec import Spec
from distill_assets.tables import markdown_table
from resources.storage import ArtifactStore


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
            "dev_set": dg.AssetOut(
                description="A task's dev prompts, held out of training and disjoint from eval: teachers are scored "
                "on them to route tasks (`routing: auto`); empty when the task's dev_size is 0.",
                kinds={"polars"},
            ),
        },
        partitions_def=partitions.task,
        deps=["task_spec"],  # the task's spec block, quality bounds and input files: an edit makes it stale
        group_name="data",
    )
    def curated_inputs(context: dg.AssetExecutionContext, store: ArtifactStore):
        task = spec.task(context.partition_key)
        source = spec.resolve_path(task.source)
        eval_source = spec.resolve_path(task.eval_source) if task.eval_source else None
        # Checked against the spec's routing: under `routing: auto`, the task's first candidate teacher.
        teacher = spec.teacher(Routing.from_spec(spec).teacher(task.name))
        mode = prompt_mode(teacher, spec)
        budget = teacher_prompt_budget(
            spec.model_path(teacher.model),
            teacher.generation.max_new_tokens,
            lambda p: teacher_prompt(teacher, task, p, mode),
            f"teacher {teacher.name}",
        )
        if budget is None:
            context.log.warning(f"{teacher.model}: no local config; prompts are not checked against its context")
        train, held, stats, bad = curate(task, source, eval_source, spec.quality_for(task.name), budget)
        quarantine = {}
        if bad:  # only reached with on_bad_input: quarantine; `fail` raised in curate
            path = write_quarantine(bad, store.path("quarantine", f"{task.name}.jsonl"))
            context.log.warning(f"{task.name}: {len(bad)} bad row(s) quarantined to {path}")
            quarantine = {
                "quarantine_file": dg.MetadataValue.path(str(path)),
                "quarantined_by_problem": dg.MetadataValue.json(problem_counts(bad)),
                "quarantined_examples": dg.MetadataValue.md("\n".join(f"- `{b.message()}`" for b in bad[:5])),
            }
        train, dev = split_eval(train, spec.dev_size(task.name))
        context.log.info(
            f"{task.name}: {train.height} training prompts, {dev.height} dev, {held.height} eval prompts, {stats}"
        )
        metadata = {"source": str(source), **stats, "quarantined": len(bad), **quarantine, **_preview(train)}
        yield dg.Output(train, "curated_inputs", metadata=metadata)
        yield dg.Output(held, "eval_set", metadata={"source": str(eval_source or source), **_preview(held)})
        yield dg.Output(dev, "dev_set", metadata={"source": str(source), **_preview(dev)})

    return [curated_inputs]


def _preview(frame: pl.DataFrame) -> dict:
    return {"preview": dg.MetadataValue.md(markdown_table(frame.head(5)))}
