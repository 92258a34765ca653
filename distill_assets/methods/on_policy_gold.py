"""On-policy distillation across tokenizers (on_policy.py builds it when the teacher's vocabulary is another).

TRL's GOLD trainer (`trl.experimental.gold`): the student writes its completions, the teacher
re-tokenizes each prompt and completion with its own tokenizer and scores them, and the two
tokenizations are aligned by byte offsets (extended ULD). Tokens whose strings both
vocabularies hold are matched by generalized JSD, the rest by ULD's sorted-probability
distance (GOLD's hybrid loss). GOLD reads byte offsets from byte-level BPE tokenizers only
(Llama 3, Qwen, SmolLM, GPT-2 style), so both sides must be byte-level; another pair is refused
with the offline alternative named. The teacher sees the prompt as the student's chat template
renders it, decoded to text.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import polars as pl

from distill_assets.template_check import tokenizer_name

if TYPE_CHECKING:
    import datasets


def check_byte_level(student_tokenizer, teacher_tokenizer, where: str) -> None:
    """GOLD's byte-offset alignment needs a byte-level BPE on both sides: say which is not, and what to use."""
    from trl.experimental.utils import is_byte_level_tokenizer

    others = [
        f"the {side}'s {tokenizer_name(tokenizer)}"
        for side, tokenizer in (("student", student_tokenizer), ("teacher", teacher_tokenizer))
        if not is_byte_level_tokenizer(tokenizer.backend_tokenizer)
    ]
    if others:
        raise ValueError(
            f"{where}: on_policy with another tokenizer than the teacher's runs TRL's GOLD, whose byte-offset "
            f"alignment needs byte-level BPE tokenizers on both sides, and {' and '.join(others)} is not; use "
            "method: cross_tokenizer_logits (offline, any fast tokenizers), or a student on the teacher's tokenizer"
        )


def prompts_and_completions(training_set: pl.DataFrame, tasks: list[str]) -> datasets.Dataset:
    """One conversational prompt/completion row per distinct prompt of `tasks`.

    GOLD tokenizes a completion with every prompt; it learns only from the student's own
    completions (lmbda 1), so the teacher's completion is never a target.
    """
    import datasets

    frame = training_set.filter(pl.col("task").is_in(tasks)).unique("prompt_id", keep="first", maintain_order=True)
    messages = frame["messages"].to_list()
    return datasets.Dataset.from_dict({"prompt": [m[:-1] for m in messages], "completion": [m[-1:] for m in messages]})


def build_gold_trainer(ctx, teacher_model, teacher_tokenizer, teacher_path: str, train_dataset: datasets.Dataset):
    """A GOLD trainer: pure on-policy (lmbda 1), hybrid ULD loss, the teacher loaded locally next to the student."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # chosen knowingly: GOLD is the cross-tokenizer trainer
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    settings = ctx.student.method_settings()
    check_byte_level(ctx.tokenizer, teacher_tokenizer, f"students.{ctx.student.name}.method")
    ctx.tokenizer.padding_side = "left"  # the student generates from the right edge
    args = GOLDConfig(
        **ctx.args,
        beta=settings.beta,
        temperature=settings.temperature,
        max_completion_length=settings.max_completion_length,
        lmbda=1.0,
        use_uld_loss=True,
        use_extended_uld=True,
        uld_use_hybrid_loss=True,
        teacher_tokenizer_name_or_path=teacher_path,
    )
    trainer = GOLDTrainer(
        model=ctx.model,
        teacher_model=teacher_model,
        args=args,
        train_dataset=train_dataset,
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
    )
    rows, tokens = ctx.model.get_output_embeddings().weight.shape[0], len(ctx.tokenizer)
    if rows > tokens:  # padded rows are no tokens: a sampled one would decode to nothing the teacher can score
        trainer.generation_config.suppress_tokens = list(range(tokens, rows))
    return trainer
