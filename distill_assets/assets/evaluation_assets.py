"""Stage 4: evaluation of teachers and students, efficiency, and the distillation report."""

import json

import dagster as dg
import polars as pl

from distill_assets.assets.progress import progress_logger
from distill_assets.assets.routing_assets import routed_completions, routed_inputs
from distill_assets.assets.training_assets import checkpoint_deps
from distill_assets.evaluation import judges, measure_efficiency, metric_summary, score_predictions, worst_prompts
from distill_assets.frames import light
from distill_assets.generation import chat_prompt, prompt_mode, teacher_prompt
from distill_assets.k8s_deploy import gpu_op_tags
from distill_assets.partitions import Partitions
from distill_assets.plots import embed_url
from distill_assets.report import ReportFiles, assemble_report, headline_summary, interval_text, to_markdown
from distill_assets.spec import Spec
from distill_assets.staleness import TEACHER_SPEC
from distill_assets.tables import markdown_table
from distill_assets.training import build_student_base
from resources.accelerator import Accelerator
from resources.storage import ArtifactStore, partitions_in
from resources.teachers import cached_teacher
from resources.transformers_backend import TransformersBackend

EVALUATION_SPEC = dg.AssetKey("evaluation_spec")  # the evaluation settings: an edit makes evaluations stale
GPU = {"pool": "gpu", "op_tags": gpu_op_tags()}  # serialised on the GPU; on Kubernetes the pod requests one


def _scores_metadata(predictions: pl.DataFrame) -> dict:
    """Each stage and task's headline score with its 95% interval, every metric in a table, and the worst answers."""
    summary = metric_summary(predictions)
    headline = summary.filter("headline")
    table = summary.select(
        "stage", "task", "metric", pl.col("score").round(4),
        interval=pl.format("[{}, {}]", pl.col("low").round(3), pl.col("high").round(3)), n="n", unscored="failed",
    )  # fmt: skip
    return {
        **{f"{r['stage']}/{r['task']}": _score_value(r["score"]) for r in headline.iter_rows(named=True)},
        **{
            f"{r['stage']}/{r['task']} 95% CI": f"{interval_text(r)} ({r['metric']})"
            for r in headline.iter_rows(named=True)
        },
        "scores": dg.MetadataValue.md(markdown_table(table)),
        "worst_prompts": dg.MetadataValue.md(
            markdown_table(worst_prompts(predictions.filter(pl.col("stage") != "before")))
        ),
    }


def _score_value(score: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.float(round(score, 4)) if score is not None else dg.MetadataValue.null()


def build(spec: Spec, partitions: Partitions) -> list:
    return [
        teacher_evaluation_asset(spec, partitions),
        student_evaluation_asset(spec, partitions),
        model_efficiency_asset(spec),
        distillation_report_asset(spec),
    ]


def teacher_evaluation_asset(spec: Spec, partitions: Partitions) -> dg.AssetsDefinition:
    by_task = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="task")

    @dg.asset(
        description="A teacher's predictions on one task's eval prompts (stage teacher) and dev prompts "
        "(stage dev, for routing), scored by the task metric; answers come through the generation cache.",
        partitions_def=partitions.teacher_task,
        ins={"eval_set": dg.AssetIn(partition_mapping=by_task), "dev_set": dg.AssetIn(partition_mapping=by_task)},
        deps=[
            dg.AssetDep(TEACHER_SPEC, partition_mapping=dg.MultiToSingleDimensionPartitionMapping("teacher")),
            EVALUATION_SPEC,
        ],
        group_name="evaluation",
        kinds={"pytorch", "polars"},
        **GPU,
    )
    def teacher_evaluation(
        context: dg.AssetExecutionContext,
        accelerator: Accelerator,
        store: ArtifactStore,
        eval_set: pl.DataFrame,
        dev_set: pl.DataFrame,
    ) -> pl.DataFrame:
        keys = context.partition_key.keys_by_dimension
        teacher, task = spec.teacher(keys["teacher"]), spec.task(keys["task"])
        splits = {"teacher": eval_set, "dev": dev_set}
        mode = prompt_mode(teacher, spec)
        ask = {"prompt_of": lambda p: teacher_prompt(teacher, task, p, mode), "stop": teacher.generation.stop}
        frames, sent, cached = [], 0, 0
        cache = store.generation_cache_path()
        with cached_teacher(teacher, spec, accelerator, cache) as backend, judges(spec, accelerator, cache) as grade:
            for stage, prompts in splits.items():
                if prompts.height:
                    dev = stage == "dev"  # routing reads the headline only
                    scored = score_predictions(
                        backend, prompts, task, spec.evaluation, teacher.name, stage, **ask, grader=grade,
                        headline_only=dev,
                    )  # fmt: skip
                    frames.append(scored)
                    sent, cached = sent + backend.stats.sent, cached + backend.stats.cached
            judged = grade.metadata()
        predictions = pl.concat(frames)
        context.add_output_metadata(
            {**_scores_metadata(predictions), "requests_sent": sent, "cached_hits": cached, **judged}
        )
        return predictions

    return teacher_evaluation


def student_evaluation_asset(spec: Spec, partitions: Partitions) -> dg.AssetsDefinition:
    settings = spec.evaluation

    @dg.asset(
        description="A student's answers on every task's eval prompts, before and after distillation, each scored by "
        "every metric of its task (the worst in the metadata; the frame under frames/student_evaluation/).",
        partitions_def=partitions.student,
        ins={"eval_set": partitions_in()},
        deps=[*checkpoint_deps(spec), EVALUATION_SPEC],  # a staged student's base checkpoint is its "before"
        group_name="evaluation",
        kinds={"pytorch", "polars"},
        **GPU,
    )
    def student_evaluation(
        context: dg.AssetExecutionContext,
        accelerator: Accelerator,
        store: ArtifactStore,
        eval_set: dict[str, pl.DataFrame],
    ) -> pl.DataFrame:
        student = spec.student(context.partition_key)
        device, dtype = accelerator.torch_device(), accelerator.torch_dtype()
        base_dir = store.checkpoint_dir(student.base.student) if student.base.student else None
        base_model, base_tokenizer = build_student_base(student, spec, dtype, base_dir)
        stages = {
            "before": lambda: TransformersBackend(base_model.to(device), base_tokenizer, settings.batch_size, "base"),
            "after": lambda: TransformersBackend.load(
                str(store.checkpoint_dir(student.name)), device, dtype, settings.batch_size
            ),
        }
        frames = []
        with judges(spec, accelerator, store.generation_cache_path()) as grade:
            for stage, make_backend in stages.items():
                backend = make_backend()
                try:
                    for task_name, prompts in sorted(eval_set.items()):
                        task = spec.task(task_name)
                        log = progress_logger(context, f"{student.name} {stage}/{task_name}")
                        frames.append(
                            score_predictions(backend, prompts, task, settings, student.name, stage, log, grader=grade)
                        )
                finally:
                    backend.close()
            judged = grade.metadata()
        predictions = pl.concat(frames)
        context.add_output_metadata({**_scores_metadata(predictions), **judged})
        return predictions  # one row per prompt and stage: the answer, the reference, every metric's score

    return student_evaluation


def model_efficiency_asset(spec: Spec) -> dg.AssetsDefinition:
    settings = spec.evaluation

    @dg.asset(
        description="Size, time to first token, latency, throughput, memory and cost of every teacher and student, "
        "measured one after another in one process on the same hardware.",
        ins={"eval_set": partitions_in()},
        deps=[*checkpoint_deps(spec, every_partition=True), EVALUATION_SPEC],
        group_name="evaluation",
        kinds={"pytorch", "polars"},
        **GPU,
    )
    def model_efficiency(
        context: dg.AssetExecutionContext,
        accelerator: Accelerator,
        store: ArtifactStore,
        eval_set: dict[str, pl.DataFrame],
    ) -> pl.DataFrame:
        mixed = pl.concat([frame.select("task", "prompt") for _, frame in sorted(eval_set.items())])
        # Interleave tasks so the timed requests cover every task.
        mixed = mixed.with_columns(_i=pl.int_range(pl.len()).over("task")).sort("_i", "task")
        asked = list(mixed.head(settings.throughput_prompts).select("task", "prompt").iter_rows())
        # A teacher served elsewhere (vLLM engine, HTTP endpoint) runs on other hardware: comparing it
        # here would not be like for like, so only local transformers teachers are measured.
        remote = [t.name for t in spec.teachers if t.backend != "transformers"]
        if remote:
            context.log.info(f"not measured here (served by another engine): {remote}")
        # Each model is timed on the prompts as the pipeline asks it them (a teacher's template, mode, stop).
        models = []
        for t in (t for t in spec.teachers if t.name not in remote):
            mode = prompt_mode(t, spec)
            prompts = [teacher_prompt(t, spec.task(task), p, mode) for task, p in asked]
            models.append((t.name, "teacher", spec.model_path(t.model), prompts, t.generation.stop))
        chats = [chat_prompt(p, spec.task(task).system_prompt) for task, p in asked]
        models += [(s.name, "student", str(store.checkpoint_dir(s.name)), chats, ()) for s in spec.students]
        rows = []
        for name, role, path, prompts, stop in models:
            context.log.info(f"measuring {name} ({role}) on {accelerator.describe()}")
            figures = measure_efficiency(
                path, prompts, settings, accelerator.torch_device(), accelerator.torch_dtype(), stop
            )
            rows.append({"model": name, "role": role, "hardware": accelerator.describe(), **figures})
        frame = pl.DataFrame(rows)
        context.add_output_metadata(
            {"hardware": accelerator.describe(), "figures": dg.MetadataValue.md(markdown_table(frame))}
        )
        return frame

    return model_efficiency


def distillation_report_asset(spec: Spec) -> dg.AssetsDefinition:
    report_curated_ins, report_curated_deps = routed_inputs(spec)
    report_curated_ins.pop("routing_table", None)  # the report reads routing_table in either mode

    @dg.asset(
        description="Quality kept and efficiency gained: per task each teacher and each student before and after, "
        "retention, per model size, latency, throughput, memory and cost, and what curation kept and dropped "
        "(report.md and report.json).",
        ins={
            "teacher_evaluation": partitions_in(),
            "student_evaluation": partitions_in(),
            "model_efficiency": dg.AssetIn(),
            "training_set": dg.AssetIn(),
            "routing_table": dg.AssetIn(),
            **report_curated_ins,
        },
        deps=report_curated_deps,
        group_name="report",
        kinds={"polars"},
    )
    def distillation_report(
        context: dg.AssetExecutionContext,
        store: ArtifactStore,
        teacher_evaluation: dict[str, pl.DataFrame],
        student_evaluation: dict[str, pl.DataFrame],
        model_efficiency: pl.DataFrame,
        training_set: pl.LazyFrame,  # read for counts and its version, never held whole
        routing_table: pl.DataFrame,
        **curated,
    ) -> dg.MaterializeResult:
        routed = routed_completions(spec, store, {**curated, "routing_table": routing_table})[1]
        report, files = assemble_report(
            spec,
            teacher_evaluation=teacher_evaluation,
            student_evaluation=student_evaluation,
            model_efficiency=model_efficiency,
            curated_completions={key: light(frame) for key, frame in routed.items()},
            training_set=training_set,
            routing_table=routing_table,
            checkpoints={s.name: store.checkpoint_dir(s.name) for s in spec.students},
            out_dir=store.path("report"),
        )
        context.log.info(f"report written to {files.markdown}")
        return dg.MaterializeResult(metadata=_report_metadata(report, files))

    return distillation_report


def _report_metadata(report: dict, files: ReportFiles) -> dict:
    """The report and its figures inline, the files' paths, and each student's headline with its intervals."""
    return {
        "report": dg.MetadataValue.md(
            to_markdown(report, image=embed_url(files.plot), task_image=embed_url(files.task_plot))
        ),
        "quality_vs_latency_png": dg.MetadataValue.path(str(files.plot)),
        "score_vs_latency_per_task_png": dg.MetadataValue.path(str(files.task_plot)),
        "report_md": dg.MetadataValue.path(str(files.markdown)),
        "report_json": dg.MetadataValue.path(str(files.json)),
        **{
            f"{name}/retention_mean": dg.MetadataValue.float(e["retention_mean"])
            for name, e in report["models"].items()
            if e["role"] == "student" and e.get("retention_mean") is not None
        },
        "headline": dg.MetadataValue.md(headline_summary(report)),
        "summary": dg.MetadataValue.json(json.loads(json.dumps(_headline(report)))),
        "lineage": dg.MetadataValue.json(report["lineage"]),
    }


def _headline(report: dict) -> dict:
    keys = ("retention_mean", "retention_min", "mean_score", "mean_score_interval", "parameters", "latency_ms_p50")
    return {name: {k: e.get(k) for k in keys} for name, e in report["models"].items() if e["role"] == "student"}
