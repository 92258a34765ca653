"""Student-training methods: one file each, registered here by the name a student's `method` gives.

A method file holds everything about its method: `Settings` (the pydantic model of the
student's optional block named after the method, every field with a default),
`label` (the trainer, as the model card and report name it), `teacher_vocabulary` (what it needs
of the teachers' tokenizers: None, "same" or "any"; training checks it before it starts,
template_check.check_compatibility), `learns_completions` (whether the
student learns the training set's completions, rendered in its chat template and cut at
`training.max_length`, which training checks before it starts), `loss_terms` (each term of its
loss, e.g. `ce`, `kd`, -> the key its trainer logs it under; the logged `loss` is their
weighted sum), `check(spec, student)`
(what the spec must give it, raised as ValueError naming the field), `teachers(spec,
student, training_set)` (whom the student learns from) and `build_trainer(ctx)` (a TRL
trainer from a `training.TrainerContext`). `training.train_student` is the one shared
path around them: it builds the student, asks the method for a trainer, trains, merges
LoRA adapters and saves the checkpoint. A new method is one new file and one line below.
"""

from __future__ import annotations

from typing import Any, Protocol

import polars as pl

from distill_assets.methods import cross_tokenizer_logits, hidden_states, offline_logits, on_policy, sft
from distill_assets.specbase import StrictModel
from distill_assets.template_check import TeacherVocabulary


class TrainingMethod(Protocol):
    """What a method file provides (a module satisfies it)."""

    Settings: type[StrictModel]
    label: str
    teacher_vocabulary: TeacherVocabulary
    learns_completions: bool
    loss_terms: dict[str, str]

    def check(self, spec: Any, student: Any) -> None: ...

    def teachers(self, spec: Any, student: Any, training_set: pl.DataFrame) -> list[str]: ...

    def build_trainer(self, ctx: Any) -> Any: ...


METHODS: dict[str, TrainingMethod] = {
    "sft": sft,
    "on_policy": on_policy,
    "offline_logits": offline_logits,
    "cross_tokenizer_logits": cross_tokenizer_logits,
    "hidden_states": hidden_states,
}
