"""choice: the label the answer names first, out of the task's `labels`, against the label the reference names.

"It's a billing problem, not shipping" names `billing` first. Labels match as whole words,
case-folded; where two labels start at the same place the longer wins ("billing issue" over
"billing"). A reference naming none of the labels is unscorable; an answer naming none scores 0.
"""

from __future__ import annotations

import re

from pydantic import Field

from distill_assets.metrics.base import Unscorable, fold
from distill_assets.specbase import StrictModel


class Settings(StrictModel):
    labels: list[str] = Field(min_length=2, description="the task's labels, e.g. [billing, shipping, other]")


compares = True


def named_label(text: str, labels: list[str]) -> str | None:
    """The label the text names first (whole words, case-folded), or None."""
    folded = fold(text)
    best: tuple[int, int, str] | None = None
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(fold(label))}(?!\w)", folded)
        if match and (best is None or (match.start(), -len(match.group())) < best[:2]):
            best = (match.start(), -len(match.group()), label)
    return best[2] if best else None


def score(prediction: str, reference: str, settings: Settings) -> float:
    expected = named_label(reference, settings.labels)  # a teacher's answer, as the reference of agreement
    if expected is None:
        raise Unscorable(f"the reference {reference[:40]!r} names none of the labels {settings.labels}")
    return float(named_label(prediction, settings.labels) == expected)
