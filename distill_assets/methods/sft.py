"""Response distillation: cross-entropy on the teacher's completions, with TRL's SFTTrainer.

Like every method file, its top half (settings, label, checks) is light: the spec imports
it to validate a student's `sft` block, so trl and datasets are imported only where a
trainer is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from distill_assets.specbase import StrictModel

if TYPE_CHECKING:
    import datasets
    from trl import SFTConfig, SFTTrainer

label = "TRL `SFTTrainer`"
teacher_vocabulary = None  # learns the teachers' text, never their token ids
learns_completions = True
loss_terms = {"ce": "loss"}  # the loss is the cross-entropy alone


class Settings(StrictModel):
    """Response distillation: cross-entropy on the teacher's completions (TRL SFTTrainer). No settings of its own."""


def check(spec, student) -> None:
    """Nothing to check at load: any teacher's completions will do."""


def teachers(spec, student, training_set: pl.DataFrame) -> list[str]:
    """The teachers whose completions the student learns from."""
    return sorted(set(training_set["teacher"]))


def to_prompt_completion(frame: pl.DataFrame) -> datasets.Dataset:
    """Conversational prompt/completion rows, so the loss falls on the teacher's answer only."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [m[:-1] for m in frame["messages"].to_list()],
            "completion": [m[-1:] for m in frame["messages"].to_list()],
        }
    )


def sft_config(args: dict, tokenizer) -> SFTConfig:
    """The shared arguments, and the student's eos token as the one generation stops on (its pad token is set)."""
    from trl import SFTConfig

    return SFTConfig(**args, eos_token=tokenizer.eos_token)


def build_trainer(ctx) -> SFTTrainer:
    from trl import SFTTrainer

    return SFTTrainer(
        model=ctx.model,
        args=sft_config(ctx.args, ctx.tokenizer),
        train_dataset=to_prompt_completion(ctx.training_set),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
    )
