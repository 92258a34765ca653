"""What the benchmarks share: a demo-size teacher, demo prompts, and the pipeline's data path as plain functions."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import polars as pl
import torch
from transformers import LlamaForCausalLM

from distill_assets.curation import curate_completions
from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.tiny_models import build_tokenizer, llama_config
from distill_assets.evaluation import score_predictions
from distill_assets.generation import generate_completions
from distill_assets.inputs import curate, split_eval
from distill_assets.routing import Routing, decide_routing, dev_scores
from distill_assets.spec import Spec
from distill_assets.verifiers import get_verifier
from resources.devices import default_dtype
from resources.transformers_backend import TransformersBackend

DEMO_MODELS = Path(__file__).resolve().parent.parent / "distill_assets/demo/models"
DEMO_TEACHER = DEMO_MODELS / "teacher_a"


def demo_teacher(path: str | None = None) -> str:
    """The given checkpoint, else the demo's teacher_a, else a random Llama of the demo's size (144 x 10 layers)."""
    if path:
        return path
    if DEMO_TEACHER.is_dir():
        return str(DEMO_TEACHER)
    out = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(tokenizer, hidden_size=144, num_hidden_layers=10)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"(demo teachers not trained yet: using a random Llama of their size in {out})")
    return str(out)


def stand_in_teacher() -> Path | None:
    """None when the demo teachers exist; else a random checkpoint of their size to stand in for both."""
    if all((DEMO_MODELS / t).is_dir() for t in ("teacher_a", "teacher_b")):
        return None
    return Path(demo_teacher())


def demo_prompts(count: int) -> list[str]:
    prompts: list[str] = []
    for task in ("dates", "units", "reverse"):
        lines = (DATA_DIR / f"{task}_eval.jsonl").read_text().splitlines()
        prompts += [json.loads(line)["prompt"] for line in lines]
    return [prompts[(i * 7) % len(prompts)] for i in range(count)]  # the tasks interleaved


def routed_data(
    spec: Spec, device: torch.device, temperatures: dict[str, float] | None = None, train_prompts: int | None = None
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], Routing]:
    """(curated completions per 'task|teacher', eval prompts per task, routing), as the pipeline builds them.

    Each task's inputs are curated and its dev split held out; with `routing: auto` every candidate
    teacher is scored on the dev split and the best routed (else the spec's routing); the routed
    teachers generate for the training prompts (the first `train_prompts` of them when given), at
    the temperature `temperatures` gives a teacher instead of its own, and curation marks what it drops.
    """
    dtype = default_dtype(device)
    train, dev, evals = {}, {}, {}
    for task in spec.tasks:
        quality = spec.quality_for(task.name)
        eval_source = spec.resolve_path(task.eval_source) if task.eval_source else None
        prompts, evals[task.name], _, _ = curate(task, spec.resolve_path(task.source), eval_source, quality)
        train[task.name], dev[task.name] = split_eval(prompts, spec.dev_size(task.name))
        if train_prompts:
            train[task.name] = train[task.name].head(train_prompts)
    backends = {}
    try:
        for teacher in spec.teachers:
            backends[teacher.name] = TransformersBackend.load(
                spec.model_path(teacher.model), device, dtype, teacher.generation.batch_size
            )
        routing = Routing.from_spec(spec)
        if routing.measured:
            predictions = pl.concat(
                [
                    score_predictions(backends[t], dev[task], spec.task(task), spec.evaluation, t, "dev")
                    for task in dev
                    for t in spec.candidates(task)
                    if dev[task].height
                ]
            )
            routing = Routing.from_table(decide_routing(spec, dev_scores(predictions)))
        curated = {}
        for task_name, teacher_name in sorted(routing.teachers.items()):
            task, teacher = spec.task(task_name), spec.teacher(teacher_name)
            if teacher_name in (temperatures or {}):
                generation = teacher.generation.model_copy(update={"temperature": temperatures[teacher_name]})
                teacher = teacher.model_copy(update={"generation": generation})
            started = time.perf_counter()
            frame = generate_completions(backends[teacher_name], train[task_name], teacher, task)
            seconds = time.perf_counter() - started
            print(
                f"generate {task_name} with {teacher_name} on {device}: {frame.height} completions, "
                f"{seconds:.1f}s, {frame.height / seconds:.0f} prompts/s, {frame['num_tokens'].sum() / seconds:.0f} "
                "tokens/s",
                flush=True,
            )
            frame = frame.join(train[task_name].select("prompt_id", "reference"), on="prompt_id", how="left")
            verifier = get_verifier(task.verifier) if task.verifier else None
            curated[f"{task_name}|{teacher_name}"] = curate_completions(frame, spec.quality_for(task_name), verifier)
    finally:
        for backend in backends.values():
            backend.close()
    return curated, evals, routing
