"""Offline logit distillation: learn the teacher's top-k next-token distribution stored with its completions.

The teacher is never loaded during training: its top-k (token_id, logprob) per generated
token were stored with the synthetic data. The loss, collator and trainer live in
`offline_logits_trainer.py` (torch and trl), imported only when a trainer is built, so
the spec can import this file's settings cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
from pydantic import Field

from distill_assets.methods.sft import sft_config, to_prompt_completion
from distill_assets.specbase import StrictModel

if TYPE_CHECKING:
    import datasets

    from distill_assets.methods.offline_logits_trainer import OfflineLogitsTrainer

label = "TRL `SFTTrainer` with a top-k KL term on stored teacher log-probabilities"
learns_completions = True


class Settings(StrictModel):
    """Offline logit distillation from the teacher's top-k log-probabilities stored with the synthetic data."""

    alpha: float = Field(0.5, ge=0, le=1, description="weight of the top-k KL term; 1 - alpha weighs the cross-entropy")
    temperature: float = Field(1.0, gt=0, description="softens student and teacher distributions in the KL term")


def check(spec, student) -> None:
    """Every teacher must store top-k log-probabilities with token ids (a local backend, top_logprobs > 0)."""
    where = f"students.{student.name}.method"
    for teacher in spec.teachers:
        if teacher.generation.top_logprobs < 1:
            raise ValueError(
                f"{where}: offline_logits learns from the teachers' stored top-k log-probabilities; "
                f"set teachers.{teacher.name}.generation.top_logprobs (e.g. 5)"
            )
        if teacher.backend == "openai":
            raise ValueError(
                f"{where}: offline_logits needs token ids, which teachers.{teacher.name} "
                "(backend openai) does not return; use a transformers or vllm teacher"
            )


def teachers(spec, student, training_set: pl.DataFrame) -> list[str]:
    """The teachers whose completions and log-probabilities the student learns from."""
    return sorted(set(training_set["teacher"]))


class VocabularyMismatch(ValueError):
    """The teacher's stored token ids do not mean the same tokens in the student's vocabulary."""


def check_vocabulary(frame: pl.DataFrame, tokenizer, sample: int = 200) -> None:
    """Fail clearly when the stored teacher tokens are not the student's: the ids would point at other tokens."""
    if "top_logprobs" not in frame.columns or frame["top_logprobs"].null_count() == frame.height:
        raise ValueError(
            "training set: no top_logprobs column or all null; offline_logits needs the teachers' "
            "generation.top_logprobs > 0 (regenerate the synthetic completions)"
        )
    missing = frame.filter(pl.col("top_logprobs").is_null())
    if missing.height:
        teachers = sorted(set(missing["teacher"]))
        raise ValueError(f"training set: {missing.height} rows from {teachers} have no top_logprobs")
    vocab, tokens = tokenizer.get_vocab(), len(tokenizer)
    for row in frame.head(sample).iter_rows(named=True):
        for step in row["top_logprobs"]:
            for entry in step:
                if entry["token_id"] is not None and entry["token_id"] >= tokens:
                    continue  # a padded embedding row past the tokenizer: no token, dropped by to_dataset
                if entry["token_id"] is None or vocab.get(entry["token"]) != entry["token_id"]:
                    raise VocabularyMismatch(
                        f"teacher {row['teacher']}: token {entry['token']!r} has id {entry['token_id']} in the "
                        f"teacher's vocabulary but {vocab.get(entry['token'])} in the student's; offline_logits "
                        "needs a student with the teacher's tokenizer (or use method: sft)"
                    )


def to_dataset(frame: pl.DataFrame, tokens: int | None = None) -> datasets.Dataset:
    """Prompt/completion rows plus each completion step's teacher top-k ids and log-probabilities.

    With `tokens` (the student tokenizer's size), entries past it are left out: ids of padded
    embedding rows, which no text tokenizes to, and which a student padded less (or not at
    all) has no logit for. The KL term renormalises the teacher over the entries kept.
    """
    dataset = to_prompt_completion(frame)
    steps = [
        [[e for e in step if tokens is None or e["token_id"] < tokens] for step in row]
        for row in frame["top_logprobs"].to_list()
    ]
    ids = [[[e["token_id"] for e in step] for step in row] for row in steps]
    logprobs = [[[e["logprob"] for e in step] for step in row] for row in steps]
    return dataset.add_column("teacher_token_ids", ids).add_column("teacher_logprobs", logprobs)


def align(dataset: datasets.Dataset, tokenizer, log=print) -> datasets.Dataset:
    """Keep the teacher steps of rows whose completion re-tokenizes to as many tokens as the teacher generated.

    The teacher generated one step per token, plus one for its end token when it stopped.
    A row whose completion the student's tokenizer splits differently (a non-canonical
    tokenization) keeps its cross-entropy but loses its KL term; when most rows disagree the
    vocabularies differ, and that is an error.
    """
    texts = [row[0]["content"] for row in dataset["completion"]]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    ok = [len(steps) in (n, n + 1) for steps, n in zip(dataset["teacher_token_ids"], lengths)]
    if ok and sum(ok) / len(ok) < 0.5:
        raise VocabularyMismatch(
            f"only {sum(ok)}/{len(ok)} completions have as many student tokens as the teacher generated: the "
            "teacher's tokens do not line up with the student's tokenization (different vocabularies)"
        )
    if not all(ok):
        log(f"offline_logits: {len(ok) - sum(ok)} of {len(ok)} rows tokenize differently; they train on CE only")
        keep = dict(enumerate(ok))
        dataset = dataset.map(
            lambda row, i: {} if keep[i] else {"teacher_token_ids": [], "teacher_logprobs": []}, with_indices=True
        )
    return dataset


def build_trainer(ctx) -> OfflineLogitsTrainer:
    from distill_assets.methods.offline_logits_trainer import OfflineLogitsTrainer, TopKCollator

    settings = ctx.student.method_settings()
    check_vocabulary(ctx.training_set, ctx.tokenizer)
    dataset = align(to_dataset(ctx.training_set, len(ctx.tokenizer)), ctx.tokenizer, ctx.log)
    args = sft_config({**ctx.args, "remove_unused_columns": False}, ctx.tokenizer)
    return OfflineLogitsTrainer(
        model=ctx.model,
        args=args,
        train_dataset=dataset,
        processing_class=ctx.tokenizer,
        data_collator=TopKCollator(pad_token_id=ctx.tokenizer.pad_token_id),
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
        alpha=settings.alpha,
        temperature=settings.temperature,
    )
