"""Task metrics: a score in [0, 1] for one prediction against its reference."""

from __future__ import annotations

from collections.abc import Callable


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the prediction equals the reference, ignoring surrounding whitespace."""
    return float(prediction.strip() == reference.strip())


METRICS: dict[str, Callable[[str, str], float]] = {"exact_match": exact_match}
