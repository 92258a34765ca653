"""numeric: the answer's number within a tolerance of the reference's.

The last number written in each text is the one compared ("The total is 1,234.5 kg" -> 1234.5):
a comma groups thousands only between groups of exactly three digits, so "1,234.5" is 1234.5
and "1,5" is two numbers, 1 and 5. A reference with no number is unscorable (counted, not 0);
an answer with none scores 0.
"""

from __future__ import annotations

import math
import re
import unicodedata

from pydantic import Field

from distill_assets.metrics.base import Unscorable
from distill_assets.specbase import StrictModel


class Settings(StrictModel):
    rel_tol: float = Field(1e-9, ge=0, description="relative tolerance, as in math.isclose")
    abs_tol: float = Field(0.0, ge=0, description="absolute tolerance, as in math.isclose")


compares = True
DEFAULTS = Settings()

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


def last_number(text: str) -> float | None:
    """The last number in the text, thousands separators dropped; None when it holds none."""
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-")  # the minus sign, as typeset
    found = [m.group() for m in _NUMBER.finditer(text) if any(c.isdigit() for c in m.group())]
    for candidate in reversed(found):
        try:
            return float(candidate.replace(",", ""))
        except ValueError:  # an exponent without a mantissa ("e5"): not a number
            continue
    return None


def score(prediction: str, reference: str, settings: Settings = DEFAULTS) -> float:
    expected = last_number(reference)
    if expected is None:
        raise Unscorable(f"no number in the reference {reference[:40]!r}")
    answered = last_number(prediction)
    return float(answered is not None and math.isclose(answered, expected, rel_tol=settings.rel_tol,
                                                       abs_tol=settings.abs_tol))  # fmt: skip
