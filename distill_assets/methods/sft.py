"""Response distillation: cross-entropy on the teacher's completions, with TRL's SFTTrainer."""

from __future__ import annotations

import datasets
import polars as pl
from trl import SFTConfig, SFTTrainer


def to_prompt_completion(frame: pl.DataFrame) -> datasets.Dataset:
    """Conversational prompt/completion rows, so the loss falls on the teacher's answer only."""
    return datasets.Dataset.from_dict(
        {
            "prompt": [m[:-1] for m in frame["messages"].to_list()],
            "completion": [m[-1:] for m in frame["messages"].to_list()],
        }
    )


def sft_config(args: dict, tokenizer) -> SFTConfig:
    return SFTConfig(**args, eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token)


def build_trainer(ctx) -> SFTTrainer:
    return SFTTrainer(
        model=ctx.model,
        args=sft_config(ctx.args, ctx.tokenizer),
        train_dataset=to_prompt_completion(ctx.training_set),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
    )
