"""Offline logit distillation across tokenizers: the stored teacher top-k, aligned to the student's tokens.

The teacher's top-k log-probabilities were stored per teacher token (`topk_ids`,
`topk_logprobs`); the student splits the same completion into other tokens with other ids.
Both tokenizations of the completion text are lined up by character offsets (the byte-offset
alignment of TRL's GOLD, on characters since both offsets index the same string): a group
closes wherever both tokenizers have a token boundary, so each group is a run of student
tokens and a run of teacher tokens spelling the same characters.

- A group of one student token and one teacher token (the boundaries coincide) is matched
  exactly: each teacher top-k token whose text is a single student token is mapped to that
  token's id (the teacher's eos to the student's), and the student learns the teacher's
  distribution over those strings by KL, as `offline_logits` does over ids.
- Any other group, and one whose teacher top-k maps to no student token, falls back to ULD
  (Universal Logit Distillation, Boizard et al. 2024): the L1 distance between the two
  distributions sorted by probability, which needs no shared vocabulary. Each side's
  distribution over the group is its first token's distribution scaled by the probability of
  the rest of its tokens (GOLD's "observed" merge, by the chain rule).

The cross-entropy on the student's own tokens is always there. The loss, collator and trainer
live in `cross_tokenizer_trainer.py`, imported only when a trainer is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from distill_assets.methods.offline_logits import check as check_stored_topk
from distill_assets.methods.offline_logits import teachers as completion_teachers
from distill_assets.methods.offline_logits import to_dataset
from distill_assets.methods.sft import sft_config
from distill_assets.methods.topk_store import TopKStore
from distill_assets.specbase import StrictModel

if TYPE_CHECKING:
    import datasets

    from distill_assets.methods.cross_tokenizer_trainer import CrossTokenizerTrainer

label = "TRL `SFTTrainer` with stored teacher top-k aligned by character offsets (exact KL, else ULD)"
teacher_vocabulary = "any"  # the two tokenizations are aligned by characters
learns_completions = True
loss_terms = {"ce": "ce", "kd": "kl", "uld": "uld"}  # term -> its trainer log key; KL on exact groups, ULD elsewhere

Span = tuple[int, int]  # (start, end) character offsets of a token in the completion
Group = tuple[int, int, int, int]  # (first student token, student tokens, first teacher step, teacher steps)


class Settings(StrictModel):
    """Offline logit distillation from a teacher with another tokenizer, aligned by character offsets."""

    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term; 1 - alpha weighs the CE")
    temperature: float = Field(1.0, gt=0, description="softens both distributions in the exact-match KL term")


def check(spec, student) -> None:
    """Every teacher must store top-k log-probabilities with token ids, as for offline_logits."""
    check_stored_topk(spec, student)


def teachers(spec, student, training_set) -> list[str]:
    """The teachers whose completions and log-probabilities the student learns from."""
    return completion_teachers(spec, student, training_set)


def align_spans(student: Sequence[Span], teacher: Sequence[Span]) -> list[Group]:
    """Group the two tokenizations of one text where both have a token boundary.

    Walks both token lists, advancing the side whose token ends first; a group closes when
    both sides' tokens end at the same character and neither side's next token ends there too
    (byte-level tokens of one multi-byte character share its span). Tokens left over on
    either side at the end (the texts differ there) form one last group.
    """
    groups: list[Group] = []
    s = t = s_start = t_start = 0
    while s < len(student) and t < len(teacher):
        s_end, t_end = student[s][1], teacher[t][1]
        if s_end < t_end or (s + 1 < len(student) and student[s + 1][1] == s_end):
            s += 1
        elif t_end < s_end or (t + 1 < len(teacher) and teacher[t + 1][1] == t_end):
            t += 1
        else:
            s, t = s + 1, t + 1
            groups.append((s_start, s - s_start, t_start, t - t_start))
            s_start, t_start = s, t
    if s_start < len(student) and t_start < len(teacher):
        groups.append((s_start, len(student) - s_start, t_start, len(teacher) - t_start))
    return groups


def token_map(teacher_tokenizer, student_tokenizer) -> np.ndarray:
    """teacher id -> the id of the student token with the same text, -1 where there is none.

    Special tokens map to nothing but the teacher's eos, which maps to the student's: both end
    the answer. A token that decodes to a partial character (a byte of a multi-byte one) maps
    to nothing.
    """

    def texts(tokenizer) -> dict[int, str]:
        size = max(tokenizer.get_vocab().values()) + 1
        decoded = tokenizer.batch_decode(
            [[i] for i in range(size)], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        special = set(tokenizer.all_special_ids)
        return {i: text for i, text in enumerate(decoded) if i not in special and text and "\ufffd" not in text}

    student: dict[str, int] = {}
    for token_id, text in texts(student_tokenizer).items():
        student.setdefault(text, token_id)
    teacher = texts(teacher_tokenizer)
    mapped = np.full(max(teacher_tokenizer.get_vocab().values()) + 1, -1, dtype=np.int64)
    for token_id, text in teacher.items():
        mapped[token_id] = student.get(text, -1)
    mapped[teacher_tokenizer.eos_token_id] = student_tokenizer.eos_token_id
    return mapped


def plan_rows(
    completions: list[str], steps: list[int], student_tokenizer, teacher_tokenizer
) -> list[tuple[list[Group], list[int], list[int]] | None]:
    """Per completion: its groups, the student's token ids and the teacher's token per step (None: no alignment).

    The teacher's tokens are its tokenizer's tokens of the completion text; a row whose teacher
    steps are neither as many (cut at max_new_tokens) nor one more (the eos it stopped on) was
    generated as other tokens, and trains on cross-entropy only. The eos step, when there is
    one, is its own exact group against the student's end-of-turn token after the completion.
    """
    encode = {"add_special_tokens": False, "return_offsets_mapping": True}
    student, teacher = student_tokenizer(completions, **encode), teacher_tokenizer(completions, **encode)
    plans = []
    for i, n in enumerate(steps):
        s_ids, t_ids = student["input_ids"][i], teacher["input_ids"][i]
        if n not in (len(t_ids), len(t_ids) + 1) or not s_ids:
            plans.append(None)
            continue
        groups = align_spans(student["offset_mapping"][i], teacher["offset_mapping"][i])
        if n == len(t_ids) + 1:
            groups.append((len(s_ids), 1, len(t_ids), 1))
            t_ids = [*t_ids, teacher_tokenizer.eos_token_id]
        plans.append((groups, list(s_ids), list(t_ids)))
    return plans


def with_plans(
    dataset: datasets.Dataset, teachers_by_row: list[str], store: TopKStore, student_tokenizer, teacher_tokenizers
) -> tuple[datasets.Dataset, int]:
    """The dataset with each row's alignment (`groups`, `student_ids`, `teacher_ids`; empty: CE only).

    Returns it with the number of rows that could not be aligned.
    """
    completions = [c[0]["content"] for c in dataset["completion"]]
    steps = store.num_steps(dataset["teacher_row"])
    plans: list = [None] * len(completions)
    for teacher, tokenizer in teacher_tokenizers.items():
        rows = [i for i, name in enumerate(teachers_by_row) if name == teacher]
        for start in range(0, len(rows), 1024):  # batched tokenization, not 100k rows at once
            chunk = rows[start : start + 1024]
            found = plan_rows([completions[i] for i in chunk], [steps[i] for i in chunk], student_tokenizer, tokenizer)
            for i, plan in zip(chunk, found):
                plans[i] = plan
    empty = ([], [], [])
    groups, student_ids, teacher_ids = zip(*[[list(map(list, p[0])), p[1], p[2]] if p else empty for p in plans])
    dataset = dataset.add_column("groups", list(groups)).add_column("student_ids", list(student_ids))
    return dataset.add_column("teacher_ids", list(teacher_ids)), sum(p is None for p in plans)


def build_trainer(ctx) -> CrossTokenizerTrainer:
    from distill_assets.methods.cross_tokenizer_trainer import CrossTokenizerCollator, CrossTokenizerTrainer

    settings = ctx.student.method_settings()
    dataset, store = to_dataset(ctx.training_frame)
    teachers_by_row = ctx.training_set["teacher"].to_list()
    missing = sorted(set(teachers_by_row) - set(ctx.teacher_tokenizers))
    if missing:
        raise ValueError(f"cross_tokenizer_logits: no tokenizer given for teachers {missing}; it aligns by them")
    dataset, unaligned = with_plans(dataset, teachers_by_row, store, ctx.tokenizer, ctx.teacher_tokenizers)
    if unaligned:
        ctx.log(f"cross_tokenizer_logits: {unaligned} of {len(dataset)} rows do not line up; they train on CE only")
    names = sorted(ctx.teacher_tokenizers)  # a row's `teacher_index` picks its teacher's token map
    index = {name: i for i, name in enumerate(names)}
    dataset = dataset.add_column("teacher_index", [index[name] for name in teachers_by_row])
    args = sft_config({**ctx.args, "remove_unused_columns": False}, ctx.tokenizer)
    return CrossTokenizerTrainer(
        model=ctx.model,
        args=args,
        train_dataset=dataset,
        processing_class=ctx.tokenizer,
        data_collator=CrossTokenizerCollator(
            pad_token_id=ctx.tokenizer.pad_token_id,
            store=store,
            token_maps=[token_map(ctx.teacher_tokenizers[name], ctx.tokenizer) for name in names],
            eos_token_id=ctx.tokenizer.eos_token_id,
        ),
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
        alpha=settings.alpha,
        temperature=settings.temperature,
    )
