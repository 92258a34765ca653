"""Feature distillation: the student matches the teachers' hidden states at mapped layers, plus cross-entropy.

Each training row's teacher (the one whose completion it is) is loaded next to the student,
in eval mode and without gradients, and reads the same tokens; at each mapped layer pair the
student's hidden state goes through a learned linear projection to the teacher's width (none
where the widths are equal) and is compared with the teacher's, over every real token of the
row. The projections are the trainer's, not the student's: the saved checkpoint is a plain
causal LM. The loss, collator and trainer live in `hidden_states_trainer.py` (torch and trl),
imported only when a trainer is built, so the spec can import this file's settings cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import polars as pl
from pydantic import Field, NonNegativeInt

from distill_assets.methods.local_teacher import load_teacher_model
from distill_assets.methods.sft import sft_config, to_prompt_completion
from distill_assets.specbase import StrictModel

if TYPE_CHECKING:
    from distill_assets.methods.hidden_states_trainer import HiddenStatesTrainer

label = "TRL `SFTTrainer` with a hidden-state matching term against the locally loaded teacher"
teacher_vocabulary = "same"  # hidden states are compared position by position: one tokenization
learns_completions = True
loss_terms = {"ce": "ce", "feature": "feature"}  # term -> its key in the trainer's logs; `loss` is their weighted sum


class Settings(StrictModel):
    """Feature distillation: match the teachers' hidden states at mapped layers, added to the cross-entropy."""

    alpha: float = Field(
        0.5, ge=0, le=1, description="weight of the hidden-state term; 1 - alpha weighs the cross-entropy"
    )
    loss: Literal["mse", "cosine"] = Field(
        "mse",
        description="mse: squared error over the teacher's squared norm (relative error, so the teacher's scale "
        "does not set the term's size); cosine: 1 - cosine similarity per token",
    )
    layers: list[tuple[NonNegativeInt, NonNegativeInt]] | None = Field(
        None,
        min_length=1,
        description="[student layer, teacher layer] pairs: 0 is the embeddings, i the output of block i (the last "
        "one after the final norm); default: student block i to teacher block round(i * teacher / student blocks)",
    )
    teacher_cache_mb: NonNegativeInt = Field(
        1024,
        description="the teachers' hidden states at the mapped layers kept across epochs, per training row, up to this "
        "many MB on the teachers' device (0: recompute every step); rows past it are recomputed when they come again",
    )


def check(spec, student) -> None:
    """Every teacher is loaded locally, and the projections need one training process."""
    where = f"students.{student.name}"
    for teacher in spec.teachers:
        if teacher.backend == "openai":
            raise ValueError(
                f"{where}.method: hidden_states loads each teacher locally to read its hidden states; "
                f"teachers.{teacher.name} is an HTTP endpoint (backend openai)"
            )
    if student.launcher.nproc_per_node > 1:
        raise ValueError(
            f"{where}.launcher.nproc_per_node: hidden_states trains its projections outside the model, which data "
            "parallelism does not synchronise; use one process"
        )


def teachers(spec, student, training_set: pl.DataFrame) -> list[str]:
    """The teachers whose completions the student learns from; each is loaded for its rows' hidden states."""
    return sorted(set(training_set["teacher"]))


def even_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student block i (1..S) to teacher block round(i * T / S), at least 1: evenly spaced, last to last.

    TinyBERT's uniform mapping (g(m) = m * N / M); the embeddings are left out, since a
    student on the teacher's tokenizer learns them through every layer above.
    """
    rounded = [(2 * i * teacher_layers + student_layers) // (2 * student_layers) for i in range(1, student_layers + 1)]
    return [(i, max(1, t)) for i, t in enumerate(rounded, start=1)]


def layer_map(
    explicit: list[tuple[int, int]] | None, student_layers: int, teacher_layers: int, where: str
) -> list[tuple[int, int]]:
    """The spec's pairs, checked against both models' depths, or the even mapping."""
    if explicit is None:
        return even_layer_map(student_layers, teacher_layers)
    for student_layer, teacher_layer in explicit:
        if student_layer > student_layers or teacher_layer > teacher_layers:
            raise ValueError(
                f"{where}: [{student_layer}, {teacher_layer}] is past the models' depths (the student has "
                f"{student_layers} blocks, the teacher {teacher_layers}; 0 is the embeddings)"
            )
    return [tuple(pair) for pair in explicit]


def build_trainer(ctx) -> HiddenStatesTrainer:
    from distill_assets.methods.hidden_states_trainer import HiddenStatesTrainer, TeacherIndexCollator

    settings = ctx.student.method_settings()
    names = teachers(ctx.spec, ctx.student, ctx.training_set)
    models = [load_teacher_model(ctx.spec, ctx.spec.teacher(name), ctx.model.dtype) for name in names]
    depth = ctx.model.config.get_text_config().num_hidden_layers
    where = f"students.{ctx.student.name}.hidden_states.layers"
    maps = [layer_map(settings.layers, depth, m.config.get_text_config().num_hidden_layers, where) for m in models]
    for name, pairs in zip(names, maps):
        ctx.log(f"hidden_states: student -> teacher {name} layers {pairs}")
    rows = [names.index(t) for t in ctx.training_set["teacher"].to_list()]
    dataset = to_prompt_completion(ctx.training_set).add_column("teacher_index", rows)
    dataset = dataset.add_column("row_index", list(range(len(dataset))))  # the key of its cached teacher states
    return HiddenStatesTrainer(
        model=ctx.model,
        args=sft_config({**ctx.args, "remove_unused_columns": False}, ctx.tokenizer),
        train_dataset=dataset,
        processing_class=ctx.tokenizer,
        data_collator=TeacherIndexCollator(pad_token_id=ctx.tokenizer.pad_token_id),
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
        teachers=models,
        layer_maps=maps,
        alpha=settings.alpha,
        loss=settings.loss,
        cache_bytes=settings.teacher_cache_mb * 2**20,
    )
