"""normalized_match: exact match after folding case, Unicode forms, inner whitespace and surrounding punctuation.

"Billing." and " billing" match "billing"; "bill ing" does not.
"""

from __future__ import annotations

from distill_assets.metrics.base import NoSettings as Settings
from distill_assets.metrics.base import fold

compares = True
DEFAULTS = Settings()


def score(prediction: str, reference: str, settings: Settings = DEFAULTS) -> float:
    return float(fold(prediction) == fold(reference))
