"""Task metrics: one file each, registered here by the name a task's `metrics` list gives.

A metric file holds `Settings` (the pydantic model of its parameters in the spec, every
field with a default unless the metric cannot do without it, as `choice`'s labels),
`compares` (it scores an answer against a reference, so it can also measure agreement with
a teacher's answer), optionally `needs_reference` (False when it scores without one; by
default equal to `compares`) and `score(prediction, reference, settings) -> float` in [0, 1].
A reference the metric cannot use raises `base.Unscorable`: the answer is counted
unscored, not scored 0. `judge` is graded by a model: `evaluation` asks it. A user's own
metric is `package.module:function` (`custom`). A new metric is one file and one line below.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from distill_assets.metrics import (
    choice,
    chrf,
    contains,
    custom,
    exact_match,
    json_valid,
    judge,
    normalized_match,
    numeric,
    rouge_l,
    token_f1,
)
from distill_assets.metrics.base import Unscorable
from distill_assets.plugins import check_name, is_function_name, resolve
from distill_assets.specbase import StrictModel

METRICS: dict[str, ModuleType] = {
    "exact_match": exact_match,
    "normalized_match": normalized_match,
    "numeric": numeric,
    "contains": contains,
    "choice": choice,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "chrf": chrf,
    "json_valid": json_valid,
    "judge": judge,
}

Scorer = Callable[[str, str, "str | None"], float]  # (prompt, prediction, reference) -> score in [0, 1]


def metric_module(name: str) -> ModuleType:
    """The file of a registered metric, or `custom` for a `package.module:function` (ValueError otherwise)."""
    check_name(name, "metric", METRICS)
    return custom if is_function_name(name) else METRICS[name]


def needs_reference(name: str) -> bool:
    """Whether the metric leaves an answer unscored where the prompt has no reference."""
    module = metric_module(name)
    return getattr(module, "needs_reference", module.compares)


def is_model_graded(name: str) -> bool:
    return getattr(metric_module(name), "model_graded", False)


def scorer(name: str, settings: StrictModel) -> Scorer:
    """The metric as one function of (prompt, prediction, reference); a user's function imported and checked."""
    if is_function_name(name):
        return custom.checked(name, resolve(name, "metric", METRICS))
    module = metric_module(name)
    if is_model_graded(name):
        raise ValueError(f"metric {name!r} is graded by a model: `evaluation.score_metrics` asks it")

    def score(prompt: str, prediction: str, reference: str | None) -> float:
        return module.score(prediction, reference, settings)

    return score


__all__ = ["METRICS", "Scorer", "Unscorable", "is_model_graded", "metric_module", "needs_reference", "scorer"]
