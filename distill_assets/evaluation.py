"""Evaluation: task metrics on the eval prompts, and efficiency measured on one machine.

Quality and efficiency are measured with the same backend code for every model, teacher
or student, so the numbers are comparable side by side.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import polars as pl
import psutil
import torch

from distill_assets.curation import JudgeVerdict, judge_scores
from distill_assets.generation import chat_prompt
from distill_assets.intervals import RESAMPLES, bootstrap_mean
from distill_assets.metrics import Unscorable, is_model_graded, metric_module, needs_reference, scorer
from distill_assets.metrics.judge import Settings as JudgeSettings
from distill_assets.spec import EvaluationSpec, MetricSpec, Spec, TaskSpec
from resources.backends import Progress, Prompt, SamplingParams, TeacherBackend
from resources.cached_backend import CachedBackend
from resources.teachers import Placement, cached_teacher
from resources.transformers_backend import TransformersBackend

SCORE = pl.Struct({"metric": pl.String, "score": pl.Float64, "error": pl.String})
PREDICTION_SCHEMA = {
    "model": pl.String,
    "stage": pl.String,
    "task": pl.String,
    "prompt_id": pl.String,
    "prompt": pl.String,
    "prediction": pl.String,
    "reference": pl.String,
    "metric": pl.String,  # the task's headline metric
    "score": pl.Float64,  # by the headline metric; null where it could not score the answer
    "scores": pl.List(SCORE),  # every metric of the task: its score, or null and why (`error`)
}
"""One row per eval prompt. Tasks with different metrics concatenate: each row lists its own."""

# (judge settings, prompts, answers, references) -> one verdict per answer
Grader = Callable[[JudgeSettings, Sequence[str], Sequence[str], Sequence["str | None"]], list[JudgeVerdict]]


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
    grader: Grader | None = None,
    headline_only: bool = False,
) -> pl.DataFrame:
    """Greedy predictions on the task's eval prompts, scored by each of the task's metrics (PREDICTION_SCHEMA).

    Each prompt is asked as `prompt_of` renders it (a teacher: `generation.teacher_prompt`);
    by default as a chat in the model's own template, as a student is asked. `grader` asks the
    judge of a `judge` metric (`Judges`); `headline_only` scores by the headline metric alone
    (the dev split, where only routing reads the scores).
    """
    prompt_of = prompt_of or (lambda p: chat_prompt(p, task.system_prompt))
    params = SamplingParams(max_new_tokens=settings.max_new_tokens, stop=tuple(stop))
    completions = backend.generate([prompt_of(p) for p in eval_set["prompt"]], params, progress)
    predictions = [c.text for c in completions]
    metrics = [task.headline] if headline_only else task.metrics
    scored = score_metrics(metrics, eval_set["prompt"], predictions, eval_set["reference"], grader)
    headline = scored[task.headline.name][0]
    per_row = [
        [{"metric": name, "score": scores[i], "error": errors[i]} for name, (scores, errors) in scored.items()]
        for i in range(eval_set.height)
    ]
    return pl.DataFrame(
        {
            "model": model,
            "stage": stage,
            "task": task.name,
            "prompt_id": eval_set["prompt_id"],
            "prompt": eval_set["prompt"],
            "prediction": predictions,
            "reference": eval_set["reference"],
            "metric": task.headline.name,
            "score": headline,
            "scores": per_row,
        },
        schema=PREDICTION_SCHEMA,
    )


Scored = tuple[list["float | None"], list["str | None"]]  # per answer: a score, or None and why


def score_metrics(
    metrics: Sequence[MetricSpec],
    prompts: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str | None],
    grader: Grader | None = None,
) -> dict[str, Scored]:
    """Per metric, each answer's score in [0, 1], or None with the reason it could not be scored.

    A metric that compares with a reference leaves an answer without one unscored, with no
    error (there was nothing to compare). A judge's failed request or scoreless reply is an error.
    """
    out = {}
    for metric in metrics:
        if is_model_graded(metric.name):
            if grader is None:
                raise ValueError(f"metric {metric.name!r} is graded by a model, and no judge was given to ask")
            verdicts = grader(metric.settings, list(prompts), list(predictions), list(references))
            out[metric.name] = (
                [None if v.score is None else v.score / 10.0 for v in verdicts],
                [v.error or (None if v.score is not None else f"no score in the judge's reply {v.reply[:60]!r}")
                 for v in verdicts],
            )  # fmt: skip
        else:
            out[metric.name] = _scored_locally(metric, prompts, predictions, references)
    return out


def _scored_locally(
    metric: MetricSpec, prompts: Sequence[str], predictions: Sequence[str], references: Sequence[str | None]
) -> Scored:
    score, skip = scorer(metric.name, metric.settings), needs_reference(metric.name)

    def one(prompt: str, prediction: str, reference: str | None) -> tuple[float | None, str | None]:
        if reference is None and skip:
            return None, None
        try:
            return score(prompt, prediction, reference), None
        except Unscorable as why:
            return None, str(why)

    outcomes = [one(*row) for row in zip(prompts, predictions, references)]
    return [score for score, _ in outcomes], [error for _, error in outcomes]


class Judges:
    """The teachers that grade `judge` metrics, each opened behind the generation cache when first asked.

    The same path as curation's judge (`cached_teacher`, `curation.judge_scores`): a question
    already answered is never sent again, and a local judge model loads only for a question
    the cache lacks.
    """

    def __init__(self, spec: Spec, placement: Placement, cache_path: Path, stack: ExitStack):
        self.spec, self.placement, self.cache_path, self.stack = spec, placement, cache_path, stack
        self.backends: dict[str, CachedBackend] = {}

    def __call__(
        self, settings: JudgeSettings, prompts: Sequence[str], answers: Sequence[str], references: Sequence
    ) -> list[JudgeVerdict]:
        if settings.teacher not in self.backends:
            teacher = self.spec.teacher(settings.teacher)
            self.backends[settings.teacher] = self.stack.enter_context(
                cached_teacher(teacher, self.spec, self.placement, self.cache_path)
            )
        return judge_scores(self.backends[settings.teacher], prompts, answers, settings, references)

    def metadata(self) -> dict[str, int]:
        """Per judging teacher: its requests, those sent, answered from the cache, and failed."""
        return {f"judge/{name}/{k}": v for name, b in self.backends.items() for k, v in b.stats.metadata().items()}


@contextmanager
def judges(spec: Spec, placement: Placement, cache_path: Path) -> Iterator[Judges]:
    """`Judges` for the spec's `judge` metrics, closed (their models unloaded) on leaving."""
    with ExitStack() as stack:
        yield Judges(spec, placement, cache_path, stack)


def task_scores(predictions: pl.DataFrame) -> pl.DataFrame:
    """Mean headline score per (model, stage, task); `n` counts the prompts."""
    return (
        predictions.group_by("model", "stage", "task")
        .agg(score=pl.col("score").mean(), n=pl.len())
        .sort("model", "stage", "task")
    )


def metric_scores(predictions: pl.DataFrame) -> pl.DataFrame:
    """The per-prompt scores in long form: one row per (model, stage, task, prompt_id, metric)."""
    return (
        predictions.select("model", "stage", "task", "prompt_id", "scores")
        .explode("scores")
        .unnest("scores")
        .filter(pl.col("metric").is_not_null())
    )


def metric_summary(predictions: pl.DataFrame, resamples: int = RESAMPLES, seed: int = 0) -> pl.DataFrame:
    """Per (model, stage, task, metric): the mean score with its 95% bootstrap interval over the eval prompts,
    `n` the answers scored and `failed` those a metric could not score (a judge's failed request)."""
    headline = predictions.select("task", pl.col("metric").alias("headline")).unique()
    rows = []
    for (model, stage, task, metric), group in metric_scores(predictions).group_by(
        "model", "stage", "task", "metric", maintain_order=True
    ):
        interval = bootstrap_mean(group["score"].to_numpy(), resamples, seed)
        rows.append(
            {
                "model": model, "stage": stage, "task": task, "metric": metric,
                **interval.rounded(6), "n": group["score"].count(), "failed": group["error"].count(),
            }
        )  # fmt: skip
    schema = {"model": pl.String, "stage": pl.String, "task": pl.String, "metric": pl.String, "estimate": pl.Float64,
              "low": pl.Float64, "high": pl.Float64, "n": pl.Int64, "failed": pl.Int64}  # fmt: skip
    return (
        pl.DataFrame(rows, schema=schema)
        .rename({"estimate": "score"})
        .join(headline, on="task", how="left")
        .with_columns(headline=pl.col("metric") == pl.col("headline"))
        .sort("model", "stage", "task", ~pl.col("headline"), "metric")
    )


def agreement_metric(task: TaskSpec) -> MetricSpec:
    """How a student's answer is matched with its teacher's: the headline metric where it compares two answers,
    else normalized_match."""
    headline = task.headline
    if metric_module(headline.name).compares and not is_model_graded(headline.name):
        return headline
    return MetricSpec(name="normalized_match")


def agreement(student: pl.DataFrame, teacher: pl.DataFrame, task: TaskSpec) -> pl.DataFrame:
    """Per eval prompt both answered: 1 where the student's answer matches the teacher's (taken as the reference)
    by `agreement_metric`, the metric's score where it grades partly; null where it cannot score."""
    pairs = student.select("prompt_id", "prompt", "prediction").join(
        teacher.select("prompt_id", pl.col("prediction").alias("teacher_prediction")), on="prompt_id", how="inner"
    )
    metric = agreement_metric(task)
    scores, _ = _scored_locally(metric, pairs["prompt"], pairs["prediction"], pairs["teacher_prediction"])
    return pairs.select("prompt_id", agreement=pl.Series(scores, dtype=pl.Float64))


def worst_prompts(predictions: pl.DataFrame, per_task: int = 3) -> pl.DataFrame:
    """The lowest-scored answers (headline) of each (model, stage, task), the unscored first: where to look."""
    return (
        predictions.sort(pl.col("score").fill_null(-1.0), "prompt_id")
        .group_by("model", "stage", "task", maintain_order=True)
        .head(per_task)
        .select("model", "stage", "task", "prompt_id", "prompt", "reference", "prediction", "metric", "score")
        .sort("model", "stage", "task", pl.col("score").fill_null(-1.0))
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
