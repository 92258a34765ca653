"""Evaluation: task metrics on the eval prompts, and efficiency measured on one machine.

Quality and efficiency are measured with the same backend code for every model, teacher
or student, so the numbers are comparable side by side.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import psutil
import torch

from distill_assets.generation import chat_prompt
from distill_assets.metrics import scorer
from distill_assets.spec import EvaluationSpec, TaskSpec
from resources.backends import Progress, Prompt, SamplingParams, TeacherBackend
from resources.transformers_backend import TransformersBackend

PREDICTION_SCHEMA = {
    "model": pl.String,
    "stage": pl.String,
    "task": pl.String,
    "prompt_id": pl.String,
    "prediction": pl.String,
    "reference": pl.String,
    "score": pl.Float64,
}


def score_predictions(
    backend: TeacherBackend,
    eval_set: pl.DataFrame,
    task: TaskSpec,
    settings: EvaluationSpec,
    model: str,
    stage: str,
    progress: Progress | None = None,
    prompt_of: Callable[[str], Prompt] | None = None,
    stop: Sequence[str] = (),
) -> pl.DataFrame:
    """Greedy predictions on the task's eval prompts, scored by the task's metric.

    Each prompt is asked as `prompt_of` renders it (a teacher: `generation.teacher_prompt`);
    by default as a chat in the model's own template, as a student is asked.
    """
    prompt_of = prompt_of or (lambda p: chat_prompt(p, task.system_prompt))
    params = SamplingParams(max_new_tokens=settings.max_new_tokens, stop=tuple(stop))
    completions = backend.generate([prompt_of(p) for p in eval_set["prompt"]], params, progress)
    metric = scorer(task.headline.name, task.headline.settings)
    predictions = [c.text for c in completions]
    return pl.DataFrame(
        {
            "model": model,
            "stage": stage,
            "task": task.name,
            "prompt_id": eval_set["prompt_id"],
            "prediction": predictions,
            "reference": eval_set["reference"],
            "score": [metric(q, p, r) for q, p, r in zip(eval_set["prompt"], predictions, eval_set["reference"])],
        },
        schema=PREDICTION_SCHEMA,
    )


def task_scores(predictions: pl.DataFrame) -> pl.DataFrame:
    """Mean score per (model, stage, task)."""
    return (
        predictions.group_by("model", "stage", "task")
        .agg(score=pl.col("score").mean(), n=pl.len())
        .sort("model", "stage", "task")
    )


class PeakRss:
    """Samples this process's resident memory in a thread; the peak above a baseline."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.process = interval, psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def increase(self) -> int:
        return self.peak - self.baseline


def checkpoint_bytes(path: str) -> int | None:
    """Bytes of weight files in a local checkpoint directory (None for a hub id)."""
    root = Path(path)
    if not root.is_dir():
        return None
    return sum(f.stat().st_size for f in root.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))


def _percentile(values: Sequence[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def measure_efficiency(
    path: str,
    prompts: Sequence[Prompt],
    settings: EvaluationSpec,
    device: torch.device,
    dtype: torch.dtype,
    stop: Sequence[str] = (),
) -> dict:
    """Load a model and time it: time to first token, batch-1 latency, batched throughput, memory.

    Time to first token is a batch-1 request for one new token (prefill plus one decode
    step); latency is a batch-1 request run to its end (the end token, a `stop` string or
    max_new_tokens); throughput counts generated tokens per second over batches of
    `throughput_batch_size`. Each model is timed on the prompts as it is asked them in the
    pipeline, so a few-shot teacher pays for its longer prompts.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with PeakRss() as rss:
        backend = TransformersBackend.load(path, device, dtype, batch_size=settings.throughput_batch_size)
        encoded = backend.encode(prompts)
        full = SamplingParams(max_new_tokens=settings.max_new_tokens, stop=tuple(stop))
        backend.generate_ids(encoded[:2], full)  # warm-up: first-call allocations and lazy init
        ttft, latency = [], []
        for ids in encoded[: settings.latency_requests]:
            sync()
            start = time.perf_counter()
            backend.generate_ids([ids], SamplingParams(max_new_tokens=1))
            sync()
            ttft.append(time.perf_counter() - start)
            start = time.perf_counter()
            backend.generate_ids([ids], full)
            sync()
            latency.append(time.perf_counter() - start)
        generated, start = 0, time.perf_counter()
        for i in range(0, len(encoded), settings.throughput_batch_size):
            generated += sum(map(len, backend.generate_ids(encoded[i : i + settings.throughput_batch_size], full)))
        sync()
        throughput = generated / (time.perf_counter() - start)
        parameters = backend.num_parameters()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.increase
    backend.close()
    del backend
    gc.collect()
    size = checkpoint_bytes(path)
    return {
        "parameters": parameters,
        "checkpoint_mb": round(size / 2**20, 2) if size is not None else None,
        "ttft_ms_p50": round(1000 * statistics.median(ttft), 2),
        "latency_ms_p50": round(1000 * statistics.median(latency), 2),
        "latency_ms_p95": round(1000 * _percentile(latency, 95), 2),
        "throughput_tokens_per_s": round(throughput, 1),
        "peak_memory_mb": round(peak / 2**20, 1),
        "cost_per_million_tokens_usd": round(settings.hourly_price_usd / (throughput * 3600) * 1e6, 4),
        "latency_requests": len(latency),
        "throughput_tokens": generated,
    }
