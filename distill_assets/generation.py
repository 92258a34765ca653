"""Synthetic completions: a teacher's answers to a task's curated prompts."""

from __future__ import annotations

import polars as pl

from distill_assets.spec import TaskSpec, TeacherSpec
from resources.backends import Messages, Progress, SamplingParams, TeacherBackend

COMPLETION_SCHEMA = {
    "task": pl.String,
    "prompt_id": pl.String,
    "prompt": pl.String,
    "completion": pl.String,
    "num_tokens": pl.Int64,
    "finish_reason": pl.String,
    "teacher": pl.String,
    "teacher_version": pl.String,
}


def chat_prompt(prompt: str, system_prompt: str | None) -> Messages:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": prompt}]


def sampling_params(teacher: TeacherSpec) -> SamplingParams:
    g = teacher.generation
    return SamplingParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, seed=g.seed)


def generate_completions(
    backend: TeacherBackend,
    prompts: pl.DataFrame,
    teacher: TeacherSpec,
    task: TaskSpec,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """One completion per prompt, with the lineage columns that tie it to this teacher."""
    chats = [chat_prompt(p, task.system_prompt) for p in prompts["prompt"]]
    completions = backend.generate(chats, sampling_params(teacher), progress)
    return pl.DataFrame(
        {
            "task": prompts["task"],
            "prompt_id": prompts["prompt_id"],
            "prompt": prompts["prompt"],
            "completion": [c.text for c in completions],
            "num_tokens": [c.num_tokens for c in completions],
            "finish_reason": [c.finish_reason for c in completions],
            "teacher": teacher.name,
            "teacher_version": teacher.version(),
        },
        schema=COMPLETION_SCHEMA,
    )


def generate_samples(
    backend: TeacherBackend,
    prompts: pl.DataFrame,
    teacher: TeacherSpec,
    task: TaskSpec,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """`task.samples` completions per prompt, each sample with its own seed, numbered in a `sample` column.

    Several samples per prompt feed rejection sampling: curation keeps those the verifier accepts.
    """
    frames = []
    for sample in range(task.samples):
        seed = teacher.generation.seed + sample
        seeded = teacher.model_copy(update={"generation": teacher.generation.model_copy(update={"seed": seed})})
        frame = generate_completions(backend, prompts, seeded, task, progress)
        frames.append(frame.with_columns(teacher_version=pl.lit(teacher.version()), sample=pl.lit(sample, pl.Int64)))
    return pl.concat(frames)
