"""On-policy distillation: the student writes, the local teacher scores each token (TRL DistillationTrainer or GOLD).

trl, transformers and datasets are imported where the trainer is built, so the spec can
import this file's settings cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
from pydantic import Field

from distill_assets.methods.local_teacher import load_teacher_model, load_teacher_tokenizer
from distill_assets.specbase import Name, StrictModel

if TYPE_CHECKING:
    import datasets
    from trl import DistillationTrainer

label = "TRL `DistillationTrainer`, generalized JSD (`GOLDTrainer` across tokenizers)"
teacher_vocabulary = "any"  # one vocabulary: generalized JSD id by id; another: GOLD aligns them by bytes
learns_completions = False  # the student writes its own completions; max_length does not apply
loss_terms = {"jsd": "loss"}  # TRL logs the generalized JSD as the loss; there is no cross-entropy term


class Settings(StrictModel):
    """On-policy distillation (TRL DistillationTrainer): the student generates, the teacher scores every token."""

    teacher: Name | None = Field(
        None, description="the teacher loaded next to the student (default: the only teacher); trains on its tasks"
    )
    beta: float = Field(
        0.5, ge=0, le=1, description="generalized JSD interpolation: 0 forward KL, 1 reverse KL, 0.5 JSD"
    )
    temperature: float = Field(1.0, gt=0, description="sampling and loss temperature")
    max_completion_length: int = Field(32, ge=1, description="tokens the student generates per prompt")


def check(spec, student) -> None:
    """The teacher to load must be named where there are several, known, and local (not an HTTP endpoint)."""
    where = f"students.{student.name}.on_policy.teacher"
    name = student.method_settings().teacher
    if name is None and len(spec.teachers) > 1:
        raise ValueError(f"{where}: name the teacher to load (there are several)")
    if name is not None and name not in {t.name for t in spec.teachers}:
        raise ValueError(f"{where}: unknown teacher {name!r}")
    if teacher_of(spec, student).backend == "openai":
        raise ValueError(f"{where}: on-policy distillation loads the teacher locally")


def teacher_of(spec, student):
    """The TeacherSpec loaded next to the student: the one its settings name, or the only one."""
    return spec.teacher(student.method_settings().teacher or spec.teachers[0].name)


def teachers(spec, student, training_set: pl.DataFrame) -> list[str]:
    """The student learns from the one teacher it is trained against, not from the training set's completions."""
    return [teacher_of(spec, student).name]


PADDED_LOGIT = -1e4  # the teacher's logit for a padded row: no probability, and finite, so no 0 * inf in the loss


def match_teacher_head(teacher_model, rows: int, tokens: int) -> None:
    """Give the teacher an output head over the student's `rows` logits that puts no mass past the tokenizer's `tokens`.

    Student and teacher share a tokenizer here, but their embeddings may be padded
    differently past it (49,152 tokens in 49,216 rows, say); the divergence compares their
    logits row by row over the student's rows. The teacher keeps its logits for the real
    tokens; its own padded rows are dropped and the student's are given PADDED_LOGIT.
    """
    import torch

    head = teacher_model.get_output_embeddings()
    if head.weight.shape[0] == rows == tokens:
        return
    weight = head.weight.detach()
    matched = torch.nn.Linear(weight.shape[1], rows, bias=True, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        matched.weight.zero_()
        matched.weight[:tokens] = weight[:tokens]
        matched.bias.fill_(PADDED_LOGIT)
        matched.bias[:tokens] = 0.0 if head.bias is None else head.bias[:tokens]
    matched.requires_grad_(False)
    teacher_model.set_output_embeddings(matched)  # no longer tied to the input embeddings, which stay as they are
    teacher_model.config.tie_word_embeddings = False
    teacher_model.config.get_text_config().vocab_size = rows


def routed_tasks(training_set: pl.DataFrame, teacher: str, routing: dict[str, str]) -> list[str]:
    """The tasks routed to the teacher that the training set holds prompts of (at least one, or a clear error)."""
    tasks = sorted(task for task, name in routing.items() if name == teacher)
    if not training_set.filter(pl.col("task").is_in(tasks)).height:
        raise ValueError(
            f"on_policy: no task is routed to teacher {teacher!r} (routing: {routing}); name a routed teacher "
            "in the student's on_policy.teacher"
        )
    return tasks


def prompts_for(training_set: pl.DataFrame, teacher: str, routing: dict[str, str]) -> datasets.Dataset:
    """One row per distinct prompt of the tasks routed to the teacher; the student writes its own completions."""
    import datasets

    tasks = routed_tasks(training_set, teacher, routing)
    frame = training_set.filter(pl.col("task").is_in(tasks)).unique("prompt_id", keep="first", maintain_order=True)
    return datasets.Dataset.from_dict({"prompt": [m[:-1] for m in frame["messages"].to_list()]})


def build_trainer(ctx) -> DistillationTrainer:
    """TRL's DistillationTrainer on one vocabulary; TRL's GOLD (on_policy_gold.py) where the teacher's is another."""
    from trl import DistillationConfig, DistillationTrainer

    settings = ctx.student.method_settings()
    loaded = teacher_of(ctx.spec, ctx.student)
    teacher_model = load_teacher_model(ctx.spec, loaded, ctx.model.dtype)
    teacher_tokenizer = ctx.teacher_tokenizers.get(loaded.name) or load_teacher_tokenizer(ctx.spec, loaded)
    if teacher_tokenizer.get_vocab() != ctx.tokenizer.get_vocab():
        from distill_assets.methods.on_policy_gold import build_gold_trainer, prompts_and_completions

        dataset = prompts_and_completions(ctx.training_set, routed_tasks(ctx.training_set, loaded.name, ctx.routing))
        path = ctx.spec.model_path(loaded.model)
        return build_gold_trainer(ctx, teacher_model, teacher_tokenizer, path, dataset)
    rows, tokens = ctx.model.get_output_embeddings().weight.shape[0], len(ctx.tokenizer)
    match_teacher_head(teacher_model, rows, tokens)
    ctx.tokenizer.padding_side = "left"  # the student generates from the right edge
    args = DistillationConfig(
        **{k: v for k, v in ctx.args.items() if k != "max_length"},
        beta=settings.beta,
        temperature=settings.temperature,
        max_completion_length=settings.max_completion_length,
        # padded rows are no tokens: a sampled one would decode to nothing and index past a smaller teacher
        generation_kwargs={"suppress_tokens": list(range(tokens, rows))} if rows > tokens else None,
    )
    return DistillationTrainer(
        model=ctx.model,
        teacher_model=teacher_model,
        args=args,
        train_dataset=prompts_for(ctx.training_set, loaded.name, ctx.routing),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
    )
