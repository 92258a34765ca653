"""The distillation report: quality kept and efficiency gained, per task and per model.

`assemble_report` turns the evaluation assets' per-prompt frames into report.json, report.md
and the figures; the `distillation_report` asset only hands it its inputs. Every score carries
a 95% bootstrap interval over the eval prompts, and comparisons of two models on the same
prompts a paired one (`intervals`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from distill_assets.evaluation import agreement, agreement_metric, metric_summary, worst_prompts
from distill_assets.intervals import (
    RESAMPLES,
    Interval,
    bootstrap_mean,
    measurable,
    paired_bootstrap,
    stratified_mean,
)
from distill_assets.metrics import is_model_graded
from distill_assets.plots import (
    pareto_front,
    quality_latency_points,
    write_quality_latency_plot,
    write_task_plots,
)
from distill_assets.routing import Routing
from distill_assets.spec import Spec, TaskSpec
from distill_assets.versions import lineage_markdown, report_lineage


def data_section(curated: dict[str, pl.DataFrame], training_set: pl.DataFrame | pl.LazyFrame | None) -> list[dict]:
    """Per teacher and task: generated, kept, dropped by each curation rule, and dropped examples.

    `curated` is keyed by teacher x task partition (curated_completions); rows the training
    set lost to duplicates across teachers count as `duplicate_across`.
    """
    from distill_assets.curation import summary

    rows = []
    for _, frame in sorted(curated.items()):
        if frame.height == 0:
            continue
        teacher, task = frame["teacher"][0], frame["task"][0]
        stats = summary(frame)
        in_training = (
            training_set.lazy()
            .filter((pl.col("teacher") == teacher) & (pl.col("task") == task))
            .select(pl.len())
            .collect()
            .item()
            if training_set is not None
            else stats["kept"]
        )
        rows.append(
            {
                "teacher": teacher,
                "task": task,
                "generated": stats["generated"],
                "kept": in_training,
                "dropped": {**stats["dropped"], "duplicate_across": stats["kept"] - in_training},
                "verifier_pass_rate": stats["verifier_pass_rate"],
                "judge_failed": stats["judge_failed"],  # kept unjudged: the judge request failed
                "examples": stats["examples"],
            }
        )
    return rows


def read_training_metrics(checkpoint_dir: Path) -> dict:
    """training_metrics.json of a student checkpoint ({} before it is trained), without the loss history."""
    path = checkpoint_dir / "training_metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics.pop("loss_history", None)
    return metrics


def build_report(
    spec: Spec,
    predictions: pl.DataFrame,
    efficiency: dict[str, dict],
    hardware: str,
    data: list[dict] | None = None,
    routing_table: list[dict] | None = None,
    training: dict[str, dict] | None = None,
    resamples: int = RESAMPLES,
) -> dict:
    """Assemble report.json's content from the evaluations' per-prompt frames (evaluation.PREDICTION_SCHEMA).

    Stage is "teacher" for teachers and "before"/"after" for students. Every score carries a
    95% bootstrap interval over the eval prompts; retention (the student's headline score after
    distillation over the teacher's the task is routed to, as the routing table routes it) and
    the student-teacher and method-method differences carry paired ones. `training` holds each
    student's training metrics (method, wall time, peak memory).
    """
    predictions = predictions.filter(pl.col("stage") != "dev")
    summary = metric_summary(predictions, resamples)
    routing = (
        {r["task"]: r["teacher"] for r in routing_table if r["routed"]}
        if routing_table
        else Routing.from_spec(spec).teachers
    )
    tasks = _task_section(spec, summary, predictions, routing, resamples)
    models = _model_section(spec, predictions, efficiency, tasks, resamples)
    largest_teacher = max(
        (t.name for t in spec.teachers if t.name in efficiency), key=lambda n: efficiency[n]["parameters"], default=None
    )
    training = training or {}
    return {
        "hardware": hardware,
        "hourly_price_usd": spec.evaluation.hourly_price_usd,
        "routing": routing,
        "routing_mode": spec.routing_mode,
        "routing_table": routing_table or [],
        "largest_teacher": largest_teacher,
        "tasks": tasks,
        "models": models,
        "methods": _methods(spec, tasks, training),
        "method_comparisons": _method_comparisons(spec, predictions, tasks, resamples),
        "multi_teacher": _multi_teacher(spec, models, training),
        "stages": _stages(spec, tasks),
        "data": data or [],
    }


def _rows(model: str, stage: str, task: str) -> pl.Expr:
    return (pl.col("model") == model) & (pl.col("stage") == stage) & (pl.col("task") == task)


def _headline_scores(predictions: pl.DataFrame, model: str, stage: str, task: str) -> pl.DataFrame:
    """One model's per-prompt headline scores on a task (prompt_id, score, prediction)."""
    return predictions.filter(_rows(model, stage, task)).select("prompt_id", "score", "prediction")


def _paired(a: pl.DataFrame, b: pl.DataFrame, resamples: int) -> tuple[Interval, Interval]:
    """Difference and ratio of two models' mean headline scores over the prompts both answered."""
    both = a.join(b, on="prompt_id", how="inner", suffix="_b")
    return paired_bootstrap(both["score"].to_numpy(), both["score_b"].to_numpy(), resamples)


def _task_section(
    spec: Spec, summary: pl.DataFrame, predictions: pl.DataFrame, routing: dict[str, str], resamples: int
) -> dict:
    """Per task: its metrics and judges, every model's score on each with its interval, and each student
    before and after, its retention and difference from the routed teacher (paired), agreement, failures."""
    tasks = {}
    for task in sorted(routing):
        spec_task, teacher = spec.task(task), routing[task]
        rows = summary.filter(pl.col("task") == task)
        headline = {(r["model"], r["stage"]): r["score"] for r in rows.filter("headline").iter_rows(named=True)}
        routed = _headline_scores(predictions, teacher, "teacher", task)
        students = {
            s.name: _student_on_task(spec_task, s.name, headline, routed, predictions, resamples) for s in spec.students
        }
        tasks[task] = {
            "routed_teacher": teacher,
            "headline": spec_task.headline.name,
            "metrics": [m.name for m in spec_task.metrics],
            "judges": {m.name: m.settings.teacher for m in spec_task.metrics if is_model_graded(m.name)},
            "agreement_metric": agreement_metric(spec_task).name,
            "teachers": {t.name: headline.get((t.name, "teacher")) for t in spec.teachers},
            "students": students,
            "scores": rows.drop("task", "headline").to_dicts(),
        }
    return tasks


def _student_on_task(
    task: TaskSpec,
    student: str,
    headline: dict[tuple[str, str], float | None],
    routed: pl.DataFrame,
    predictions: pl.DataFrame,
    resamples: int,
) -> dict:
    """A student's headline before and after, retention and difference from the routed teacher (paired
    intervals), its agreement with that teacher, and its worst answers beside the teacher's."""
    after = _headline_scores(predictions, student, "after", task.name)
    difference, retention = _paired(after, routed, resamples)
    if after.height == 0 or routed.height == 0:
        agreed = bootstrap_mean([])
    else:
        per_prompt = agreement(predictions.filter(_rows(student, "after", task.name)), routed, task)
        agreed = bootstrap_mean(per_prompt["agreement"].to_numpy(), resamples)
    return {
        "before": headline.get((student, "before")),
        "after": headline.get((student, "after")),
        "retention": None if np.isnan(retention.estimate) else retention.estimate,
        "retention_interval": [retention.rounded()["low"], retention.rounded()["high"]],
        "vs_routed_teacher": {**difference.rounded(), "measurable": measurable(difference)},
        "agreement": agreed.rounded(),
        "failures": _failures(predictions, student, task.name, routed),
    }


def _failures(predictions: pl.DataFrame, student: str, task: str, routed: pl.DataFrame, k: int = 3) -> list[dict]:
    """The student's lowest-scored answers after distillation (below 1, or unscored), beside the teacher's."""
    mine = predictions.filter(_rows(student, "after", task) & (pl.col("score").fill_null(-1.0) < 1.0))
    worst = worst_prompts(mine, k).select("prompt_id", "prompt", "reference", "prediction", "score")
    teacher = routed.select("prompt_id", teacher_prediction="prediction", teacher_score="score")
    return worst.join(teacher, on="prompt_id", how="left", maintain_order="left").to_dicts()


def _model_section(
    spec: Spec, predictions: pl.DataFrame, efficiency: dict[str, dict], tasks: dict, resamples: int
) -> dict:
    """Per measured model: its efficiency figures, a student's against each teacher, and its mean headline
    score over every task with a stratified interval (each task resampled on its own)."""
    teachers = {t.name: {"role": "teacher", **efficiency[t.name]} for t in spec.teachers if t.name in efficiency}
    models = dict(teachers)
    for s in spec.students:
        if s.name in efficiency:
            models[s.name] = _student_entry(s.name, efficiency[s.name], teachers, tasks)
    for name, entry in models.items():
        stage = "teacher" if entry["role"] == "teacher" else "after"
        groups = [_headline_scores(predictions, name, stage, task)["score"].to_numpy() for task in tasks]
        mean = stratified_mean(groups, resamples) if groups else bootstrap_mean([])
        rounded = mean.rounded()
        entry["mean_score"] = None if np.isnan(mean.estimate) else mean.estimate
        entry["mean_score_interval"] = [rounded["low"], rounded["high"]]
    return models


def _student_entry(student: str, figures: dict, teachers: dict[str, dict], tasks: dict) -> dict:
    entry = {"role": "student", **figures}
    entry["vs_teachers"] = {
        name: {
            "parameter_ratio": round(entry["parameters"] / m["parameters"], 4),
            "latency_speedup": round(m["latency_ms_p50"] / entry["latency_ms_p50"], 2),
            "ttft_speedup": round(m["ttft_ms_p50"] / entry["ttft_ms_p50"], 2),
            "throughput_ratio": round(entry["throughput_tokens_per_s"] / m["throughput_tokens_per_s"], 2),
        }
        for name, m in teachers.items()
    }
    retentions = [tasks[task]["students"][student]["retention"] for task in tasks]
    entry["retention_min"] = min((r for r in retentions if r is not None), default=None)
    entry["retention_mean"] = (
        sum(r for r in retentions if r is not None) / len(retentions)
        if all(r is not None for r in retentions)
        else None
    )
    return entry


def _size(spec: Spec, student) -> str:
    base = spec.stages(student.name)[0].base  # a staged student has its first stage's size
    arch = base.architecture
    return f"{arch.hidden_size}x{arch.num_hidden_layers}" if arch else str(base.model)


def _stages(spec: Spec, tasks: dict) -> list[dict]:
    """Staged students (`base.student`): per task the score after each stage, first to last, and the last stage's
    gain over the student it builds on."""
    rows = []
    for s in (s for s in spec.students if s.base.student is not None):
        chain = [c.name for c in spec.stages(s.name)]
        scores = {task: {n: entry["students"][n]["after"] for n in chain} for task, entry in tasks.items()}
        gain = {
            task: None if None in (v[s.name], v[s.base.student]) else v[s.name] - v[s.base.student]
            for task, v in scores.items()
        }
        rows.append(
            {"student": s.name, "base_student": s.base.student, "stages": chain, "scores": scores, "gain": gain}
        )
    return rows


def _methods(spec: Spec, tasks: dict, training: dict[str, dict]) -> list[dict]:
    """One row per student: size, method, budget, training wall time and peak memory, score per task."""
    rows = []
    for s in spec.students:
        t = training.get(s.name, {})
        rows.append(
            {
                "student": s.name,
                "size": _size(spec, s),
                "method": s.method_label(),
                "steps": s.training.max_steps,
                "batch_size": s.training.per_device_train_batch_size,
                "train_seconds": t.get("train_seconds"),
                "peak_memory_mb": t.get("peak_memory_mb"),
                "scores": {task: entry["students"][s.name]["after"] for task, entry in tasks.items()},
            }
        )
    return rows


def _method_comparisons(spec: Spec, predictions: pl.DataFrame, tasks: dict, resamples: int) -> list[dict]:
    """Students of one size compared pairwise, per task and over all tasks' prompts pooled: the difference of
    their headline scores after distillation with its paired interval, and whether it is measurable."""
    rows = []
    for i, a in enumerate(spec.students):
        for b in spec.students[i + 1 :]:
            if _size(spec, a) != _size(spec, b):
                continue
            ours = {task: _headline_scores(predictions, a.name, "after", task) for task in tasks}
            theirs = {task: _headline_scores(predictions, b.name, "after", task) for task in tasks}
            pairs = [
                *((task, ours[task], theirs[task]) for task in tasks),
                ("all tasks", _pooled(ours), _pooled(theirs)),
            ]
            for task, x, y in pairs:
                difference = _paired(x, y, resamples)[0]
                names = {"a": a.name, "b": b.name, "a_method": a.method_label(), "b_method": b.method_label()}
                rows.append({**names, "task": task, **difference.rounded(), "measurable": measurable(difference)})
    return rows


def _pooled(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Per-task frames as one, each prompt id prefixed with its task so that ids of two tasks never pair."""
    return pl.concat([f.with_columns(prompt_id=pl.lit(f"{task}/") + pl.col("prompt_id")) for task, f in frames.items()])


def _multi_teacher(spec: Spec, models: dict, training: dict[str, dict]) -> list[dict]:
    """Students trained on several teachers' data: their mean score over every task against each teacher's."""
    teachers = {n: e["mean_score"] for n, e in models.items() if e["role"] == "teacher"}
    rows = []
    for s in spec.students:
        learned_from = training.get(s.name, {}).get("teachers")
        if s.name not in models or learned_from is None or len(learned_from) < 2:
            continue
        mean = models[s.name]["mean_score"]
        rows.append(
            {
                "student": s.name,
                "teachers": learned_from,
                "student_mean": mean,
                "teacher_means": teachers,
                "above_every_teacher": mean is not None and all(v is not None and mean > v for v in teachers.values()),
            }
        )
    return rows


def _fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _table_head(title: str, head: list[str]) -> list[str]:
    """A section title and a markdown table's header rows."""
    return ["", title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def interval_text(entry: dict, spec: str = ".3f") -> str:
    """ "0.990 [0.975, 1.000]": a score (`score` or `estimate`) with its interval; "–" when there is none."""
    value = entry.get("score", entry.get("estimate"))
    if value is None:
        return "–"
    if entry.get("low") is None or entry.get("high") is None:
        return _fmt(value, spec)
    return f"{_fmt(value, spec)} [{_fmt(entry['low'], spec)}, {_fmt(entry['high'], spec)}]"


def _verdict(difference: dict) -> str:
    if difference.get("estimate") is None:
        return "–"
    if not difference["measurable"]:
        return "no measurable difference"
    return "higher" if difference["estimate"] > 0 else "lower"


def _metric_label(task: dict, metric: str) -> str:
    judge = task.get("judges", {}).get(metric)
    label = f"{metric} (judged by {judge})" if judge else metric
    return f"**{label}**" if metric == task.get("headline") else label


def _quality_markdown(report: dict, teachers: list[str], students: list[str]) -> list[str]:
    """Every metric of every task for every model, each with its interval; retention on the headline's row."""
    head = ["task", "metric", "routed teacher", *teachers]
    for s in students:
        head += [f"{s} before", f"{s} after", f"{s} retention"]
    lines = _table_head("## Quality (on the eval prompts; 95% bootstrap intervals over the prompts)", head)[1:]
    for task, entry in report["tasks"].items():
        scores = {(r["model"], r["stage"], r["metric"]): r for r in entry.get("scores", [])}
        for metric in entry.get("metrics") or [entry.get("headline")]:
            row = [
                task,
                _metric_label(entry, metric),
                entry["routed_teacher"],
                *(_score_cell(scores, t, "teacher", metric) for t in teachers),
            ]
            for s in students:
                e = entry["students"][s]
                retention = "–"
                if metric == entry.get("headline") and e.get("retention") is not None:
                    low, high = e.get("retention_interval") or [None, None]
                    retention = interval_text({"score": e["retention"], "low": low, "high": high}, ".1%")
                before = _fmt(scores.get((s, "before", metric), {}).get("score"))
                row += [before, _score_cell(scores, s, "after", metric), retention]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _score_cell(scores: dict, model: str, stage: str, metric: str) -> str:
    r = scores.get((model, stage, metric))
    if r is None:
        return "–"
    return interval_text(r) + (f" ({r['failed']} unscored)" if r.get("failed") else "")


def _versus_teacher_markdown(report: dict, students: list[str]) -> list[str]:
    """Each student against its routed teacher on each task, paired over the same prompts, and their agreement."""
    head = ["task", "student", "student after", "routed teacher", "difference", "", "agreement with the teacher"]
    lines = _table_head("## Students against the routed teacher (headline metric, paired over the prompts)", head)
    for task, entry in report["tasks"].items():
        teacher = entry["routed_teacher"]
        teacher_row = next((r for r in entry.get("scores", []) if (r["model"], r["stage"], r["metric"]) ==
                            (teacher, "teacher", entry.get("headline"))), {})  # fmt: skip
        for s in students:
            e = entry["students"][s]
            mine = next((r for r in entry.get("scores", []) if (r["model"], r["stage"], r["metric"]) ==
                         (s, "after", entry.get("headline"))), {})  # fmt: skip
            difference = e.get("vs_routed_teacher") or {}
            agreed = e.get("agreement") or {}
            lines.append(
                f"| {task} | {s} | {interval_text(mine)} | {teacher} {interval_text(teacher_row)} | "
                f"{interval_text(difference, '+.3f')} | {_verdict(difference)} | {interval_text(agreed)} "
                f"({entry.get('agreement_metric', 'exact_match')}) |"
            )
    return lines


def to_markdown(report: dict, image: str | None = None, task_image: str | None = None) -> str:
    teachers = [m for m, e in report["models"].items() if e["role"] == "teacher"] or sorted(
        {t for task in report["tasks"].values() for t in task["teachers"]}
    )
    students = sorted({s for task in report["tasks"].values() for s in task["students"]})
    lines = _quality_markdown(report, teachers, students)
    lines += _versus_teacher_markdown(report, students)
    cols = [
        ("parameters", "parameters", ",d"),
        ("checkpoint_mb", "checkpoint MB", ".2f"),
        ("ttft_ms_p50", "TTFT p50 ms", ".1f"),
        ("latency_ms_p50", "latency p50 ms", ".1f"),
        ("latency_ms_p95", "latency p95 ms", ".1f"),
        ("throughput_tokens_per_s", "tokens/s", ",.0f"),
        ("peak_memory_mb", "peak memory MB", ".1f"),
        ("cost_per_million_tokens_usd", "USD / M tokens", ".4f"),
    ]
    lines += _table_head(
        f"## Efficiency (measured in one process on {report['hardware']}; ${report['hourly_price_usd']}/hour)",
        ["model", "role", *(c[1] for c in cols)],
    )
    for name, e in report["models"].items():
        lines.append(f"| {name} | {e['role']} | " + " | ".join(_fmt(e.get(k), f) for k, _, f in cols) + " |")
    lines += ["", "## Students against the teachers", ""]
    for name, e in report["models"].items():
        if e["role"] != "student":
            continue
        for teacher, v in e["vs_teachers"].items():
            lines.append(
                f"- **{name}** vs {teacher}: {v['parameter_ratio']:.1%} of the parameters, "
                f"{v['latency_speedup']:.2f}x lower latency, {v['ttft_speedup']:.2f}x lower time to first token, "
                f"{v['throughput_ratio']:.2f}x the throughput"
            )
        lines.append(
            f"- **{name}** keeps {_fmt(e['retention_mean'], '.1%')} of the routed teachers' headline score on average "
            f"(lowest task: {_fmt(e['retention_min'], '.1%')})"
        )
    lines += _routing_markdown(report)
    lines += _methods_markdown(report)
    lines += _stages_markdown(report)
    lines += _failures_markdown(report)
    lines += _data_markdown(report.get("data") or [])
    lines += lineage_markdown(report.get("lineage"))
    if image:
        lines += ["", "## Quality against latency", "", f"![quality vs latency]({image})"]
    if task_image:
        lines += ["", "Per task, with each score's 95% interval:", "", f"![score vs latency per task]({task_image})"]
    return "\n".join(lines) + "\n"


def _failures_markdown(report: dict, per_task: int = 3) -> list[str]:
    """A few of each student's lowest-scored answers per task, beside the routed teacher's answer."""
    head = ["task", "student", "prompt", "reference", "student's answer", "score", "routed teacher's answer"]
    lines = _table_head("## Failures (each student's lowest-scored answers, headline metric)", head)
    found = False
    for task, entry in report["tasks"].items():
        for s, e in entry["students"].items():
            for f in (e.get("failures") or [])[:per_task]:
                found = True
                texts = [_cell(f[k]) for k in ("prompt", "reference", "prediction")]
                cells = [task, s, *texts, _fmt(f["score"]), _cell(f["teacher_prediction"])]
                lines.append("| " + " | ".join(cells) + " |")
    return lines if found else []


def _cell(value) -> str:
    """A prompt or an answer as a table cell: code-quoted, one line, cut at 60 characters."""
    text = "–" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text[:60]}`" if text != "–" else text


def _routing_markdown(report: dict) -> list[str]:
    table = report.get("routing_table") or []
    if not table:
        return []
    lines = [
        "",
        f"## Routing ({report.get('routing_mode', 'fixed')}: which teacher generates each task's data)",
        "",
        "| task | teacher | dev score | dev prompts | routed |",
        "|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['task']} | {r['teacher']} | {_fmt(r['dev_score'])} | {r['dev_prompts']} | "
            f"{'**yes**' if r['routed'] else ''} |"
        )
    return lines


def _methods_markdown(report: dict) -> list[str]:
    methods = report.get("methods") or []
    if not methods:
        return []
    tasks = list(report["tasks"])
    head = ["student", "size", "method", "steps x batch", *tasks, "mean", "train s", "train peak MB"]
    lines = _table_head("## Methods (headline score after distillation; training wall time and peak memory)", head)
    for m in methods:
        model = report["models"].get(m["student"], {})
        low, high = model.get("mean_score_interval") or [None, None]
        cells = [m["student"], m["size"], m["method"], f"{m['steps']} x {m['batch_size']}"]
        cells += [_fmt(m["scores"][t]) for t in tasks]
        cells += [interval_text({"score": model.get("mean_score"), "low": low, "high": high})]
        cells += [_fmt(m["train_seconds"], ".0f"), _fmt(m["peak_memory_mb"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    sizes = [m["size"] for m in methods]
    if len(set(sizes)) < len(sizes):  # methods compared at one size: say what one run can show
        lines.append(
            "\nEach row is one training run. Students of one size compare methods, but part of any "
            "difference is the seed's; `python -m bench.methods_seeds --spec <spec>` trains them over "
            "several seeds and reports each task's mean and range."
        )
    comparisons = report.get("method_comparisons") or []
    if comparisons:
        lines.append("\nDifferences between students of one size, paired over the same eval prompts:\n")
    for c in comparisons:
        lines.append(
            f"- {c['a']} ({c['a_method']}) - {c['b']} ({c['b_method']}), {c['task']}: "
            f"{interval_text(c, '+.3f')}: {_verdict(c)}"
        )
    for row in report.get("multi_teacher") or []:
        versus = ", ".join(f"{t} {_fmt(v)}" for t, v in row["teacher_means"].items())
        verdict = "above every teacher" if row["above_every_teacher"] else "not above every teacher"
        lines.append(
            f"\n- **{row['student']}** learned from {', '.join(row['teachers'])}: mean headline score over all tasks "
            f"{_fmt(row['student_mean'])} vs {versus} ({verdict})"
        )
    return lines


def _stages_markdown(report: dict) -> list[str]:
    lines = []
    for row in report.get("stages") or []:
        chain = row["stages"]
        title = f"## Staged students: {' -> '.join(chain)} (headline score after each stage)"
        lines += _table_head(title, ["task", *chain, "gain of the last stage"])
        for task, scores in row["scores"].items():
            gain = row["gain"][task]
            cells = [task, *(_fmt(scores[n]) for n in chain), "–" if gain is None else f"{gain:+.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _data_markdown(data: list[dict]) -> list[str]:
    if not data:
        return []
    rules = list(data[0]["dropped"])
    head = ["teacher", "task", "generated", "kept", *(f"dropped: {r}" for r in rules), "verifier pass rate"]
    lines = _table_head("## Data (synthetic completions and what curation kept)", head)
    for d in data:
        cells = [d["teacher"], d["task"], str(d["generated"]), str(d["kept"]), *(str(d["dropped"][r]) for r in rules)]
        lines.append("| " + " | ".join([*cells, _fmt(d["verifier_pass_rate"], ".1%")]) + " |")
    unjudged = [f"{d['teacher']}/{d['task']} {d['judge_failed']}" for d in data if d.get("judge_failed")]
    if unjudged:
        lines += ["", f"Kept unjudged, their judge request failed: {', '.join(unjudged)}."]
    examples = [(d["teacher"], d["task"], e) for d in data for e in d["examples"]]
    if examples:
        lines += ["", "Examples of dropped completions:", ""]
        for teacher, task, e in examples[:20]:
            lines.append(f"- {teacher}/{task}, **{e['rule']}**: `{e['prompt']}` -> `{e['completion']}` ({e['why']})")
    return lines


def write_report(
    report: dict, out_dir: Path, image: str | None = None, task_image: str | None = None
) -> tuple[Path, Path]:
    """report.md (linking the figures `image` and `task_image`, files beside it, when given) and report.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "report.md", out_dir / "report.json"
    md.write_text("# Distillation report\n\n" + to_markdown(report, image, task_image))
    js.write_text(json.dumps(report, indent=2) + "\n")
    return md, js


def headline_summary(report: dict) -> str:
    """Markdown lines for the UI: each student's headline score per task after distillation with its interval,
    its retention with the paired interval, and where it is no measurably different from its teacher."""
    lines = []
    for task, entry in report["tasks"].items():
        for student, e in entry["students"].items():
            row = next((r for r in entry.get("scores", []) if (r["model"], r["stage"], r["metric"]) ==
                        (student, "after", entry.get("headline"))), {})  # fmt: skip
            low, high = e.get("retention_interval") or [None, None]
            retention = interval_text({"score": e.get("retention"), "low": low, "high": high}, ".1%")
            lines.append(
                f"- **{student}** on {task} ({entry.get('headline')}): {interval_text(row)}, retention {retention} "
                f"of {entry['routed_teacher']}: {_verdict(e.get('vs_routed_teacher') or {})}"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class ReportFiles:
    """What `assemble_report` wrote."""

    markdown: Path
    json: Path
    plot: Path
    task_plot: Path


def assemble_report(
    spec: Spec,
    *,
    teacher_evaluation: dict[str, pl.DataFrame],
    student_evaluation: dict[str, pl.DataFrame],
    model_efficiency: pl.DataFrame,
    curated_completions: dict[str, pl.DataFrame],
    training_set: pl.DataFrame | pl.LazyFrame,
    routing_table: pl.DataFrame,
    checkpoints: dict[str, Path],
    out_dir: Path,
) -> tuple[dict, ReportFiles]:
    """The report from the evaluation assets' frames, written to `out_dir` with its figures.

    The evaluations are keyed by partition (student names for `student_evaluation`);
    `checkpoints` maps each student to its local checkpoint folder (its training metrics and
    lineage file).
    """
    predictions = pl.concat([*teacher_evaluation.values(), *student_evaluation.values()])
    hardware = model_efficiency["hardware"][0]
    efficiency = {r.pop("model"): r for r in model_efficiency.drop("role", "hardware").to_dicts()}
    training = {s.name: read_training_metrics(checkpoints[s.name]) for s in spec.students}
    report = build_report(
        spec,
        predictions,
        efficiency,
        hardware,
        data_section(curated_completions, training_set),
        routing_table=routing_table.to_dicts(),
        training=training,
    )
    report["lineage"] = report_lineage({s: checkpoints[s] for s in student_evaluation}, training_set)
    report["pareto_front"] = pareto_front(quality_latency_points(report))
    plot = write_quality_latency_plot(report, out_dir / "quality_vs_latency.png")
    task_plot = write_task_plots(report, out_dir / "score_vs_latency_per_task.png")
    markdown, json_path = write_report(report, out_dir, image=plot.name, task_image=task_plot.name)
    return report, ReportFiles(markdown=markdown, json=json_path, plot=plot, task_plot=task_plot)
