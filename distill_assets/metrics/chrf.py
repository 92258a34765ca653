"""chrf: chrF (character n-gram F-score; chrF++ with `word_order: 2`), by sacrebleu, scaled to 0-1."""

from __future__ import annotations

from functools import cache

from pydantic import Field

from distill_assets.specbase import StrictModel


class Settings(StrictModel):
    char_order: int = Field(6, ge=1, description="longest character n-gram")
    word_order: int = Field(0, ge=0, description="longest word n-gram: 0 for chrF, 2 for chrF++")
    beta: float = Field(2.0, gt=0, description="weight of recall against precision")


compares = True
DEFAULTS = Settings()


@cache
def _chrf(settings: Settings):
    from sacrebleu.metrics import CHRF

    return CHRF(char_order=settings.char_order, word_order=settings.word_order, beta=settings.beta)


def score(prediction: str, reference: str, settings: Settings = DEFAULTS) -> float:
    return _chrf(settings).sentence_score(prediction, [reference]).score / 100.0
