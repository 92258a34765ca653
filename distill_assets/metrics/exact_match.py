"""exact_match: 1 when the answer equals the reference, ignoring surrounding whitespace only."""

from __future__ import annotations

from distill_assets.metrics.base import NoSettings as Settings

compares = True  # scores an answer against a reference
DEFAULTS = Settings()


def score(prediction: str, reference: str, settings: Settings = DEFAULTS) -> float:
    return float(prediction.strip() == reference.strip())
