"""rouge_l: ROUGE-L F-measure (longest common subsequence of words), by Google's `rouge-score` package.

Its default tokenizer keeps ASCII letters and digits only and drops every other character,
so "café" would lose its "é" and Chinese text would vanish; words here are split as
`token_f1` splits them (any script, case-folded) and handed to its scorer.
"""

from __future__ import annotations

from functools import cache

from pydantic import Field

from distill_assets.metrics.base import words
from distill_assets.specbase import StrictModel


class Settings(StrictModel):
    use_stemmer: bool = Field(False, description="Porter-stem English words before matching")


compares = True
DEFAULTS = Settings()


class _Words:
    """A tokenizer as rouge-score takes one."""

    def __init__(self, stem: bool):
        if stem:
            from nltk.stem import porter

            self.stemmer = porter.PorterStemmer()
        else:
            self.stemmer = None

    def tokenize(self, text: str) -> list[str]:
        tokens = words(text)
        return [self.stemmer.stem(t) for t in tokens] if self.stemmer else tokens


@cache
def _scorer(stem: bool):
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=_Words(stem))


def score(prediction: str, reference: str, settings: Settings = DEFAULTS) -> float:
    return float(_scorer(settings.use_stemmer).score(reference, prediction)["rougeL"].fmeasure)
