"""judge: an LLM grades each answer against the reference (or alone, without one) with a rubric, 0-10 scaled to 0-1.

The judge is one of the spec's teachers, asked through the generation cache as curation's
judge is (`curation.judge_scores`). A request that fails after its retries, or a reply
without a score, leaves the answer unscored and counted, never scored 0.
"""

from __future__ import annotations

from pydantic import Field

from distill_assets.specbase import Name, StrictModel

DEFAULT_RUBRIC = (
    "You grade an answer to a question against a reference answer. Score it from 0 to 10: 10 when it says what "
    "the reference says, in any wording; 0 when it is wrong, a refusal or off topic; partly right in between. "
    "Without a reference, score whether the answer is correct and complete. "
    "Reply with the score only, as `Score: N`."
)


class Settings(StrictModel):
    teacher: Name = Field(description="the teacher that judges (its backend, through the generation cache)")
    rubric: str = Field(DEFAULT_RUBRIC, description="the judge's instructions; its reply must hold `Score: N`")
    max_new_tokens: int = Field(16, ge=1)


compares = False  # grades an answer; agreement with a teacher is measured by another metric
needs_reference = False
model_graded = True
