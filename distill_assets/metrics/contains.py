"""contains: 1 when the answer contains the reference (case-folded unless `case_sensitive`)."""

from __future__ import annotations

import unicodedata

from distill_assets.metrics.base import Unscorable
from distill_assets.specbase import StrictModel


class Settings(StrictModel):
    case_sensitive: bool = False


compares = True
DEFAULTS = Settings()


def score(prediction: str, reference: str, settings: Settings = DEFAULTS) -> float:
    needle, haystack = (unicodedata.normalize("NFKC", t).strip() for t in (reference, prediction))
    if not needle:
        raise Unscorable("the reference is empty: every answer would contain it")
    if not settings.case_sensitive:
        needle, haystack = needle.casefold(), haystack.casefold()
    return float(needle in haystack)
