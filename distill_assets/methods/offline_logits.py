"""Offline logit distillation: learn the teacher's top-k next-token distribution stored with its completions.

The teacher is never loaded during training: its top-k token ids and log-probabilities per
generated token were stored with the synthetic data (`topk_ids`, `topk_logprobs`). They are
copied, a chunk at a time, into an Arrow file that training memory-maps (`TopKStore`); each
dataset row names its row there, and the collator reads its batch's rows as numpy arrays.
The loss, collator and trainer live in `offline_logits_trainer.py` (torch and trl), imported
only when a trainer is built, so the spec can import this file's settings cheaply.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from pydantic import Field

from distill_assets.frames import TOPK_COLUMNS, Frame, lazy
from distill_assets.methods.sft import sft_config, to_prompt_completion
from distill_assets.methods.topk_store import TopKStore, write_topk_store
from distill_assets.specbase import StrictModel

if TYPE_CHECKING:
    import datasets

    from distill_assets.methods.offline_logits_trainer import OfflineLogitsTrainer

label = "TRL `SFTTrainer` with a top-k KL term on stored teacher log-probabilities"
teacher_vocabulary = "same"  # the stored top-k ids are taken as the student's ids
learns_completions = True
loss_terms = {"ce": "ce", "kd": "kl"}  # term -> its key in the trainer's logs; `loss` is their weighted sum


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
                f"{where}: {student.method} learns from the teachers' stored top-k log-probabilities; "
                f"set teachers.{teacher.name}.generation.top_logprobs (e.g. 5)"
            )
        if teacher.backend == "openai":
            raise ValueError(
                f"{where}: {student.method} needs token ids, which teachers.{teacher.name} "
                "(backend openai) does not return; use a transformers or vllm teacher"
            )


def teachers(spec, student, training_set: pl.DataFrame) -> list[str]:
    """The teachers whose completions and log-probabilities the student learns from."""
    return sorted(set(training_set["teacher"]))


class VocabularyMismatch(ValueError):
    """The teacher's stored token ids do not mean the same tokens in the student's vocabulary."""


NO_LOGPROBS = (
    "training set: no top-k log-probabilities (topk_logprobs); offline_logits needs the teachers' "
    "generation.top_logprobs > 0 (regenerate the synthetic completions)"
)


def _flat(series: pl.Series) -> pl.Series:
    """A per-token list-of-lists column's entries, in order."""
    return series.explode(empty_as_null=False, keep_nulls=False).explode(empty_as_null=False, keep_nulls=False)


def check_vocabulary(
    frame: Frame, tokenizer, teacher_tokenizer: Callable[[str], Any] = lambda _: None, sample: int = 200
) -> None:
    """Fail clearly when the stored teacher tokens are not the student's: the ids would point at other tokens.

    On the first `sample` rows, each stored id's token (the `topk_tokens` stored with it, else the
    teacher's tokenizer's token for that id, `teacher_tokenizer(teacher name)`) must have the same
    id in the student's vocabulary. Ids past the student's tokenizer are padded embedding rows,
    left out by the store. A teacher whose tokenizer is unknown (None) is checked by `align` only.
    """
    frame = lazy(frame)
    columns = frame.collect_schema().names()
    if "topk_logprobs" not in columns:
        raise ValueError(NO_LOGPROBS)
    rows = frame.head(sample).select("teacher", *[c for c in TOPK_COLUMNS if c in columns]).collect()
    vocab, size = tokenizer.get_vocab(), len(tokenizer)
    for teacher in sorted(set(rows["teacher"])):
        own = rows.filter(pl.col("teacher") == teacher)
        if own["topk_logprobs"].null_count():
            raise ValueError(
                f"training set: teacher {teacher}'s rows have no top-k log-probabilities; set "
                f"teachers.{teacher}.generation.top_logprobs > 0 and regenerate the synthetic completions"
            )
        if "topk_ids" not in columns or own["topk_ids"].null_count():
            raise ValueError(
                f"training set: teacher {teacher} stored no token ids with its log-probabilities (backend openai "
                "returns token strings only); offline_logits needs a transformers or vllm teacher"
            )
        ids = _flat(own["topk_ids"]).to_numpy()
        if "topk_tokens" in columns and own["topk_tokens"].null_count() == 0:
            pairs = zip(_flat(own["topk_tokens"]).to_list(), ids.tolist())
        elif (teacher_tokens := teacher_tokenizer(teacher)) is not None:
            unique = np.unique(ids).tolist()
            pairs = zip(teacher_tokens.convert_ids_to_tokens(unique), unique)
        else:
            continue
        for token, token_id in pairs:
            if token_id >= size or token is None:
                continue  # a padded embedding row past the tokenizer: no token, left out of the store
            if vocab.get(token) != token_id:
                raise VocabularyMismatch(
                    f"teacher {teacher}: token {token!r} has id {token_id} in the teacher's vocabulary but "
                    f"{vocab.get(token)} in the student's; offline_logits needs a student with the teacher's "
                    "tokenizer (or use method: cross_tokenizer_logits)"
                )


def to_dataset(frame: Frame, store_dir: Path | None = None) -> tuple[datasets.Dataset, TopKStore]:
    """Prompt/completion rows, each with `teacher_row` (its row in the store), and the memory-mapped top-k store.

    The store is a file in `store_dir` (a temporary folder by default), unlinked once mapped: it
    lives as long as the mapping. The text columns are read in memory; the top-k never are.
    """
    frame = lazy(frame)
    if "topk_logprobs" not in frame.collect_schema():
        raise ValueError(NO_LOGPROBS)
    text = frame.select("messages").collect()
    with tempfile.NamedTemporaryFile(dir=store_dir, prefix="topk-", suffix=".arrow") as file:
        store = TopKStore(write_topk_store(frame, Path(file.name)))
    dataset = to_prompt_completion(text).add_column("teacher_row", list(range(text.height)))
    return dataset, store


def align(dataset: datasets.Dataset, tokenizer, store: TopKStore, log=print) -> datasets.Dataset:
    """Keep the teacher steps of rows whose completion re-tokenizes to as many tokens as the teacher generated.

    The teacher generated one step per token, plus one for its end token when it stopped.
    A row whose completion the student's tokenizer splits differently (a non-canonical
    tokenization) keeps its cross-entropy but loses its KL term (`teacher_row` -1); when most
    rows disagree the vocabularies differ, and that is an error.
    """
    lengths = []
    for batch in dataset.select_columns("completion").iter(batch_size=1024):  # not 100k token lists at once
        texts = [completion[0]["content"] for completion in batch["completion"]]
        lengths += [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows = dataset["teacher_row"]
    ok = [steps in (n, n + 1) for steps, n in zip(store.num_steps(rows), lengths)]
    if ok and sum(ok) / len(ok) < 0.5:
        raise VocabularyMismatch(
            f"only {sum(ok)}/{len(ok)} completions have as many student tokens as the teacher generated: the "
            "teacher's tokens do not line up with the student's tokenization (different vocabularies)"
        )
    if not all(ok):
        log(f"offline_logits: {len(ok) - sum(ok)} of {len(ok)} rows tokenize differently; they train on CE only")
        kept = [row if keep else -1 for row, keep in zip(rows, ok)]
        dataset = dataset.remove_columns("teacher_row").add_column("teacher_row", kept)
    return dataset


def teacher_tokenizer(spec) -> Callable[[str], Any]:
    """teacher name -> its tokenizer, loaded from its local checkpoint (None when there is none)."""
    from transformers import AutoTokenizer

    def load(name: str):
        path = Path(spec.model_path(spec.teacher(name).model))
        return AutoTokenizer.from_pretrained(path) if path.is_dir() else None

    return load


def build_trainer(ctx) -> OfflineLogitsTrainer:
    from distill_assets.methods.offline_logits_trainer import OfflineLogitsTrainer, TopKCollator

    settings = ctx.student.method_settings()
    check_vocabulary(ctx.training_frame, ctx.tokenizer, teacher_tokenizer(ctx.spec))
    dataset, store = to_dataset(ctx.training_frame)
    dataset = align(dataset, ctx.tokenizer, store, ctx.log)
    args = sft_config({**ctx.args, "remove_unused_columns": False}, ctx.tokenizer)
    return OfflineLogitsTrainer(
        model=ctx.model,
        args=args,
        train_dataset=dataset,
        processing_class=ctx.tokenizer,
        data_collator=TopKCollator(pad_token_id=ctx.tokenizer.pad_token_id, store=store, vocab_size=len(ctx.tokenizer)),
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
        alpha=settings.alpha,
        temperature=settings.temperature,
    )
