"""Blocking asset checks at every hand-off: a failing ERROR check stops everything downstream in the run.

- curated_inputs, eval_set [task]: the great-expectations prompt suite.
- synthetic_completions [teacher|task]: the completion suite (non-empty, bounded, no refusals or
  leaks, few duplicates, verifier pass rate where the task has a verifier).
- curated_completions [teacher|task]: curation kept enough to learn from.
- training_set: no eval prompt (after normalisation) is in it (contamination guard).
"""

import dagster as dg
import polars as pl

from distill_assets.curation import verify
from distill_assets.frames import light
from distill_assets.inputs import normalise_text
from distill_assets.partitions import Partitions
from distill_assets.quality import EXAMPLES, CheckOutcome, completion_suite, prompt_suite
from distill_assets.spec import Spec
from distill_assets.verifiers import get_verifier
from resources.storage import partitions_in

PROMPT_CHECKS = ["schema", "prompts_present", "unique_prompt_ids", "prompt_length"]
COMPLETION_CHECKS = [
    "schema",
    "non_empty_completions",
    "completion_length",
    "no_refusals",
    "duplicate_rate",
    "no_template_leaks",
]


def _result(asset: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=outcome.check,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={
            "observed": dg.MetadataValue.json(outcome.observed),
            "failing_examples": dg.MetadataValue.json(outcome.failing_examples[:EXAMPLES]),
        },
    )


def _specs(asset: str, names: list[str], partitions_def, deps=None) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(n, asset=asset, blocking=True, partitions_def=partitions_def, additional_deps=deps)
        for n in names
    ]


def build(spec: Spec, partitions: Partitions) -> list:
    return [
        _curated_inputs_suite(spec, partitions),
        _eval_set_suite(spec, partitions),
        _synthetic_completions_suite(spec, partitions),
        _kept_enough(spec, partitions),
        _no_eval_prompts_in_training(),
    ]


def _curated_inputs_suite(spec: Spec, partitions: Partitions) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=_specs("curated_inputs", PROMPT_CHECKS, partitions.task),
        description="great-expectations suite on a task's training prompts.",
    )
    def curated_inputs_suite(context: dg.AssetCheckExecutionContext, curated_inputs: pl.DataFrame):
        for outcome in prompt_suite(curated_inputs, spec.quality_for(context.partition_key)):
            yield _result("curated_inputs", outcome)

    return curated_inputs_suite


def _eval_set_suite(spec: Spec, partitions: Partitions) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=_specs("eval_set", [*PROMPT_CHECKS, "references_present"], partitions.task),
        description="great-expectations suite on a task's eval prompts.",
    )
    def eval_set_suite(context: dg.AssetCheckExecutionContext, eval_set: pl.DataFrame):
        task = spec.task(context.partition_key)
        for outcome in prompt_suite(eval_set, spec.quality_for(task.name), need_reference=task.needs_reference()):
            yield _result("eval_set", outcome)
        if not task.needs_reference():  # scored by the judge and agreement with the teacher: none needed
            yield _result("eval_set", CheckOutcome("references_present", True, "the task's metrics need no reference"))

    return eval_set_suite


def _synthetic_completions_suite(spec: Spec, partitions: Partitions) -> dg.AssetChecksDefinition:
    any_verifier = any(t.verifier for t in spec.tasks)
    completion_checks = COMPLETION_CHECKS + (["verifier_pass_rate"] if any_verifier else [])
    by_task = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="task")

    @dg.multi_asset_check(
        specs=_specs(
            "synthetic_completions",
            completion_checks,
            partitions.teacher_task,
            deps=[dg.AssetDep("curated_inputs", partition_mapping=by_task)],
        ),
        ins={"curated_inputs": dg.AssetIn()},
        description="great-expectations suite on one teacher x task partition of synthetic completions.",
    )
    def synthetic_completions_suite(
        context: dg.AssetCheckExecutionContext, synthetic_completions: pl.LazyFrame, curated_inputs: pl.DataFrame
    ):
        task = spec.task(context.partition_key.keys_by_dimension["task"])
        references = curated_inputs.select("prompt_id", "reference")
        frame = light(synthetic_completions).join(references, on="prompt_id", how="left", maintain_order="left")
        verified = verify(frame, get_verifier(task.verifier)) if task.verifier else None
        for outcome in completion_suite(frame, spec.quality_for(task.name), verified):
            yield _result("synthetic_completions", outcome)
        if any_verifier and verified is None:
            yield dg.AssetCheckResult(
                asset_key="synthetic_completions",
                check_name="verifier_pass_rate",
                passed=True,
                description=f"task {task.name!r} has no verifier",
            )

    return synthetic_completions_suite


def _kept_enough(spec: Spec, partitions: Partitions) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset="curated_completions",
        blocking=True,
        partitions_def=partitions.teacher_task,
        description="Curation kept at least quality.min_kept_rate of the completions.",
    )
    def kept_enough(context: dg.AssetCheckExecutionContext, curated_completions: pl.LazyFrame):
        quality = spec.quality_for(context.partition_key.keys_by_dimension["task"])
        curated_completions = curated_completions.select("dropped_by").collect()
        kept = curated_completions.filter(pl.col("dropped_by").is_null()).height
        rate = kept / max(curated_completions.height, 1)
        top = curated_completions.group_by("dropped_by").len().drop_nulls().sort("len", descending=True)
        return dg.AssetCheckResult(
            passed=kept > 0 and rate >= quality.min_kept_rate,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "kept": kept,
                "generated": curated_completions.height,
                "kept_rate": round(rate, 4),
                "bound": quality.min_kept_rate,
                "dropped_by": dg.MetadataValue.json(dict(top.iter_rows())),
            },
        )

    return kept_enough


def _no_eval_prompts_in_training() -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset="training_set",
        blocking=True,
        additional_ins={"eval_set": partitions_in()},
        description="Contamination guard: no eval prompt, after normalisation, is in the training set.",
    )
    def no_eval_prompts_in_training(training_set: pl.LazyFrame, eval_set: dict[str, pl.DataFrame]):
        held = {normalise_text(p) for frame in eval_set.values() for p in frame["prompt"]}
        leaked = [p for p in training_set.select("prompt").collect()["prompt"] if normalise_text(p) in held]
        return dg.AssetCheckResult(
            passed=not leaked,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "contaminated_rows": len(leaked),
                "eval_prompts": len(held),
                "examples": dg.MetadataValue.json(leaked[:EXAMPLES]),
            },
        )

    return no_eval_prompts_in_training
