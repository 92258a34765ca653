"""On-policy distillation with TRL's DistillationTrainer: the student writes, the local teacher scores each token."""

from __future__ import annotations

import datasets
import polars as pl
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DistillationConfig, DistillationTrainer


def check_same_vocabulary(student_tokenizer, teacher_tokenizer, teacher: str) -> None:
    """Generalized JSD compares full next-token distributions: the token ids must mean the same tokens."""
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocab != teacher_vocab:
        differ = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()))[:5]
        raise ValueError(
            f"on_policy: teacher {teacher!r} has another vocabulary than the student ({len(teacher_vocab)} vs "
            f"{len(student_vocab)} tokens; e.g. {differ}); use a student built on the teacher's tokenizer, "
            "or method: sft / offline_logits"
        )


def prompts_for(training_set: pl.DataFrame, teacher: str, routing: dict[str, str]) -> datasets.Dataset:
    """One row per distinct prompt of the tasks routed to the teacher; the student writes its own completions."""
    tasks = sorted(task for task, name in routing.items() if name == teacher)
    frame = training_set.filter(pl.col("task").is_in(tasks)).unique("prompt_id", keep="first", maintain_order=True)
    if frame.height == 0:
        raise ValueError(
            f"on_policy: no task is routed to teacher {teacher!r} (routing: {routing}); name a routed teacher "
            "in the student's on_policy.teacher"
        )
    return datasets.Dataset.from_dict({"prompt": [m[:-1] for m in frame["messages"].to_list()]})


def build_trainer(ctx) -> DistillationTrainer:
    settings = ctx.student.method_settings()
    teacher = ctx.spec.on_policy_teacher(ctx.student)
    path = ctx.spec.resolve(teacher.model)
    check_same_vocabulary(ctx.tokenizer, AutoTokenizer.from_pretrained(path, revision=teacher.revision), teacher.name)
    teacher_model = AutoModelForCausalLM.from_pretrained(path, revision=teacher.revision, dtype=ctx.model.dtype)
    ctx.tokenizer.padding_side = "left"  # the student generates from the right edge
    args = DistillationConfig(
        **{k: v for k, v in ctx.args.items() if k != "max_length"},
        beta=settings.beta,
        temperature=settings.temperature,
        max_completion_length=settings.max_completion_length,
    )
    return DistillationTrainer(
        model=ctx.model,
        teacher_model=teacher_model,
        args=args,
        train_dataset=prompts_for(ctx.training_set, teacher.name, ctx.routing),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
    )
