"""A user's own metric, named `package.module:function` in the spec as verifiers are.

The function is `(prompt, prediction, reference) -> float | bool`, a score in [0, 1]; it is
called with `reference=None` on a task without references. It may raise
`distill_assets.metrics.base.Unscorable` for an answer it cannot score (counted, not 0).
"""

from __future__ import annotations

from collections.abc import Callable

from distill_assets.metrics.base import NoSettings as Settings

compares = True  # called with the teacher's answer as the reference, it measures agreement
needs_reference = False  # the function decides what a missing reference means

Function = Callable[[str, str, "str | None"], "float | bool"]


def checked(name: str, function: Function) -> Callable[[str, str, str | None], float]:
    """The function, its result checked to be a score in [0, 1] (a ValueError naming it otherwise)."""

    def score(prompt: str, prediction: str, reference: str | None) -> float:
        value = function(prompt, prediction, reference)
        if isinstance(value, bool):
            return float(value)
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"metric {name!r} returned {value!r} for {prompt[:40]!r}; a score is a number in [0, 1]")
        return float(value)

    return score


__all__ = ["Settings", "checked", "compares", "needs_reference"]
