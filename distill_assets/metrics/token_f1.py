"""token_f1: the F1 of the answer's words against the reference's (SQuAD's, without its English article rule).

Words are case-folded and split at whitespace and punctuation in any script. Both empty
score 1; one empty scores 0.
"""

from __future__ import annotations

from collections import Counter

from distill_assets.metrics.base import NoSettings as Settings
from distill_assets.metrics.base import words

compares = True
DEFAULTS = Settings()


def score(prediction: str, reference: str, settings: Settings = DEFAULTS) -> float:
    answer, expected = words(prediction), words(reference)
    if not answer or not expected:
        return float(answer == expected)
    common = sum((Counter(answer) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(answer), common / len(expected)
    return 2 * precision * recall / (precision + recall)
