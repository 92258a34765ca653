"""The distillation report: quality kept and efficiency gained, per task and per model.

`assemble_report` turns the evaluation assets' frames into report.json, report.md and the
quality-vs-latency figure; the `distillation_report` asset only hands it its inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from distill_assets.evaluation import task_scores
from distill_assets.plots import pareto_front, quality_latency_points, write_quality_latency_plot
from distill_assets.routing import Routing
from distill_assets.spec import Spec
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
    scores: pl.DataFrame,
    efficiency: dict[str, dict],
    hardware: str,
    data: list[dict] | None = None,
    routing_table: list[dict] | None = None,
    training: dict[str, dict] | None = None,
) -> dict:
    """Assemble report.json's content.

    `scores` has one row per (model, stage, task) with the mean `score`; stage is
    "teacher" for teachers and "before"/"after" for students. Retention is the student's
    score after distillation over the score of the teacher the task is routed to, as the
    routing table (rows of the routing_table asset) routes it. `training` holds each
    student's training metrics (method, wall time, peak memory).
    """
    score = {(r["model"], r["stage"], r["task"]): r["score"] for r in scores.iter_rows(named=True)}
    routing = (
        {r["task"]: r["teacher"] for r in routing_table if r["routed"]}
        if routing_table
        else Routing.from_spec(spec).teachers
    )
    tasks = _task_section(spec, score, routing)
    models = _model_section(spec, score, efficiency, tasks)
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
        "multi_teacher": _multi_teacher(spec, models, training),
        "stages": _stages(spec, tasks),
        "data": data or [],
    }


Scores = dict[tuple[str, str, str], float]  # (model, stage, task) -> mean score


def _task_section(spec: Spec, score: Scores, routing: dict[str, str]) -> dict:
    """Per task: the routed teacher, every teacher's score, each student's before, after and retention."""
    tasks = {}
    for task in sorted(routing):
        teacher_scores = {t.name: score.get((t.name, "teacher", task)) for t in spec.teachers}
        routed = teacher_scores[routing[task]]
        students = {}
        for s in spec.students:
            after = score.get((s.name, "after", task))
            students[s.name] = {
                "before": score.get((s.name, "before", task)),
                "after": after,
                "retention": (after / routed) if after is not None and routed else None,
            }
        tasks[task] = {"routed_teacher": routing[task], "teachers": teacher_scores, "students": students}
    return tasks


def _model_section(spec: Spec, score: Scores, efficiency: dict[str, dict], tasks: dict) -> dict:
    """Per measured model: its efficiency figures, a student's against each teacher, and its mean score."""
    teachers = {t.name: {"role": "teacher", **efficiency[t.name]} for t in spec.teachers if t.name in efficiency}
    models = dict(teachers)
    for s in spec.students:
        if s.name in efficiency:
            models[s.name] = _student_entry(s.name, efficiency[s.name], teachers, tasks)
    for name, entry in models.items():  # quality on one axis: mean exact match over every task
        stage = "teacher" if entry["role"] == "teacher" else "after"
        values = [score.get((name, stage, task)) for task in tasks]
        entry["mean_score"] = sum(values) / len(values) if values and None not in values else None
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


def to_markdown(report: dict, image: str | None = None) -> str:
    teachers = [m for m, e in report["models"].items() if e["role"] == "teacher"] or sorted(
        {t for task in report["tasks"].values() for t in task["teachers"]}
    )
    students = sorted({s for task in report["tasks"].values() for s in task["students"]})
    head = ["task", "routed teacher", *teachers]
    for s in students:
        head += [f"{s} before", f"{s} after", f"{s} retention"]
    lines = _table_head("## Quality (exact match on the eval prompts)", head)[1:]
    for task, entry in report["tasks"].items():
        row = [task, entry["routed_teacher"], *(_fmt(entry["teachers"].get(t)) for t in teachers)]
        for s in students:
            e = entry["students"][s]
            row += [_fmt(e["before"]), _fmt(e["after"]), _fmt(e["retention"], ".1%")]
        lines.append("| " + " | ".join(row) + " |")
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
            f"- **{name}** keeps {_fmt(e['retention_mean'], '.1%')} of the routed teachers' exact match on average "
            f"(lowest task: {_fmt(e['retention_min'], '.1%')})"
        )
    lines += _routing_markdown(report)
    lines += _methods_markdown(report)
    lines += _stages_markdown(report)
    lines += _data_markdown(report.get("data") or [])
    lines += lineage_markdown(report.get("lineage"))
    if image:
        lines += ["", "## Quality against latency", "", f"![quality vs latency]({image})"]
    return "\n".join(lines) + "\n"


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
    lines = _table_head("## Methods (exact match after distillation; training wall time and peak memory)", head)
    for m in methods:
        mean = report["models"].get(m["student"], {}).get("mean_score")
        cells = [m["student"], m["size"], m["method"], f"{m['steps']} x {m['batch_size']}"]
        cells += [_fmt(m["scores"][t]) for t in tasks]
        cells += [_fmt(mean), _fmt(m["train_seconds"], ".0f"), _fmt(m["peak_memory_mb"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    sizes = [m["size"] for m in methods]
    if len(set(sizes)) < len(sizes):  # methods compared at one size: say what one run can show
        lines.append(
            "\nEach row is one training run. Students of one size compare methods, but part of any "
            "difference is the seed's; `python -m bench.methods_seeds --spec <spec>` trains them over "
            "several seeds and reports each task's mean and range."
        )
    for row in report.get("multi_teacher") or []:
        versus = ", ".join(f"{t} {_fmt(v)}" for t, v in row["teacher_means"].items())
        verdict = "above every teacher" if row["above_every_teacher"] else "not above every teacher"
        lines.append(
            f"\n- **{row['student']}** learned from {', '.join(row['teachers'])}: mean exact match over all tasks "
            f"{_fmt(row['student_mean'])} vs {versus} ({verdict})"
        )
    return lines


def _stages_markdown(report: dict) -> list[str]:
    lines = []
    for row in report.get("stages") or []:
        chain = row["stages"]
        title = f"## Staged students: {' -> '.join(chain)} (exact match after each stage)"
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


def write_report(report: dict, out_dir: Path, image: str | None = None) -> tuple[Path, Path]:
    """report.md (linking `image`, a file beside it, when given) and report.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "report.md", out_dir / "report.json"
    md.write_text("# Distillation report\n\n" + to_markdown(report, image))
    js.write_text(json.dumps(report, indent=2) + "\n")
    return md, js


@dataclass(frozen=True)
class ReportFiles:
    """What `assemble_report` wrote."""

    markdown: Path
    json: Path
    plot: Path


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
    """The report from the evaluation assets' frames, written to `out_dir` with its figure.

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
        task_scores(predictions),
        efficiency,
        hardware,
        data_section(curated_completions, training_set),
        routing_table=routing_table.to_dicts(),
        training=training,
    )
    report["lineage"] = report_lineage({s: checkpoints[s] for s in student_evaluation}, training_set)
    report["pareto_front"] = pareto_front(quality_latency_points(report))
    plot = write_quality_latency_plot(report, out_dir / "quality_vs_latency.png")
    markdown, json_path = write_report(report, out_dir, image=plot.name)
    return report, ReportFiles(markdown=markdown, json=json_path, plot=plot)
