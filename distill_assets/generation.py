"""Synthetic completions: a teacher's answers to a task's curated prompts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import polars as pl

from distill_assets.spec import Spec, TaskSpec, TeacherSpec
from resources.backends import Completion, Messages, Progress, Prompt, Request, SamplingParams, TeacherBackend

TOKEN_LOGPROB = pl.Struct({"token": pl.String, "token_id": pl.Int64, "logprob": pl.Float64})

COMPLETION_SCHEMA = {
    "task": pl.String,
    "prompt_id": pl.String,
    "prompt": pl.String,
    "sample_index": pl.Int64,
    "completion": pl.String,
    "num_tokens": pl.Int64,
    "finish_reason": pl.String,
    "error": pl.String,  # null when the teacher answered; the reason when it failed after its retries
    # per generated token, the teacher's top-k alternatives; null unless generation.top_logprobs > 0
    "top_logprobs": pl.List(pl.List(TOKEN_LOGPROB)),
    "teacher": pl.String,
    "teacher_version": pl.String,
}


def chat_prompt(prompt: str, system_prompt: str | None) -> Messages:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": prompt}]


def has_chat_template(model_dir: Path) -> bool:
    """Whether a checkpoint directory's tokenizer carries a chat template (read from its files, nothing loaded)."""
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    config = model_dir / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def prompt_mode(teacher: TeacherSpec, spec: Spec) -> Literal["chat", "completion"]:
    """How the teacher is prompted: its spec's `mode`, else completion for a local model without a chat template."""
    if teacher.mode is not None:
        return teacher.mode
    if teacher.backend != "openai":
        path = Path(spec.model_path(teacher.model))
        if path.is_dir() and not has_chat_template(path):
            return "completion"
    return "chat"


def teacher_prompt(teacher: TeacherSpec, task: TaskSpec, prompt: str, mode: str) -> Prompt:
    """A task prompt as the teacher is asked it: its prompt_template applied, as chat messages or raw text."""
    text = teacher.render(prompt, task.name)
    if mode == "completion":
        return f"{task.system_prompt}\n\n{text}" if task.system_prompt else text
    return chat_prompt(text, task.system_prompt)


def sampling_params(teacher: TeacherSpec, task: TaskSpec | None = None) -> SamplingParams:
    """The teacher's sampling settings; a task's `samples` overrides n (rejection sampling)."""
    g = teacher.generation
    return SamplingParams(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        seed=g.seed,
        n=task.samples if task is not None and task.samples is not None else g.n,
        top_logprobs=g.top_logprobs,
        stop=tuple(g.stop),
    )


def checkpoint_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a local checkpoint's files: a retrained model changes it."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def teacher_identity(teacher: TeacherSpec, spec: Spec | None = None) -> str:
    """The generation cache's name for what generates: the spec's identity, plus the checkpoint's files if local."""
    identity = teacher.identity()
    if spec is not None and teacher.backend != "openai":
        path = Path(spec.model_path(teacher.model))
        if path.is_dir():
            identity += f"|files:{checkpoint_fingerprint(path)}"
    return identity


def _logprob_rows(completion: Completion) -> list[list[dict]] | None:
    if completion.top_logprobs is None:
        return None
    return [
        [{"token": t.token, "token_id": t.token_id, "logprob": t.logprob} for t in step]
        for step in completion.top_logprobs
    ]


def generate_completions(
    backend: TeacherBackend,
    prompts: pl.DataFrame,
    teacher: TeacherSpec,
    task: TaskSpec,
    progress: Progress | None = None,
    mode: str = "chat",
) -> pl.DataFrame:
    """n completions per prompt (failed ones included, with their reason), with the lineage columns.

    `mode` is the teacher's `prompt_mode`: chat messages, or its prompt_template as raw text.
    """
    params = sampling_params(teacher, task)
    rows = [(i, s) for i in range(prompts.height) for s in range(params.n)]
    asked = [teacher_prompt(teacher, task, p, mode) for p in prompts["prompt"]]
    completions = backend.complete([Request(asked[i], s) for i, s in rows], params, progress)
    index = [i for i, _ in rows]
    return pl.DataFrame(
        {
            "task": prompts["task"].gather(index),
            "prompt_id": prompts["prompt_id"].gather(index),
            "prompt": prompts["prompt"].gather(index),
            "sample_index": [s for _, s in rows],
            "completion": [c.text for c in completions],
            "num_tokens": [c.num_tokens for c in completions],
            "finish_reason": [c.finish_reason for c in completions],
            "error": [c.error for c in completions],
            "top_logprobs": [_logprob_rows(c) for c in completions],
            "teacher": teacher.name,
            "teacher_version": teacher.version(),
        },
        schema=COMPLETION_SCHEMA,
    )
