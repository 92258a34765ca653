import json

import polars as pl
import pytest

from distill_assets.evaluation import PREDICTION_SCHEMA
from distill_assets.report import assemble_report, build_report, to_markdown, write_report
from distill_assets.spec import load_spec
from distill_assets.versions import write_lineage


def predictions(rows: list[tuple[str, str, str, float]], prompts: int = 10) -> pl.DataFrame:
    """Per-prompt evaluation frames from (model, stage, task, score) rows: each of `prompts` prompts scored `score`."""
    frames = [
        pl.DataFrame(
            {
                "model": model, "stage": stage, "task": task, "prompt_id": [f"{task}{i}" for i in range(prompts)],
                "prompt": "q", "prediction": "x", "reference": "x", "metric": "exact_match", "score": score,
                "scores": [[{"metric": "exact_match", "score": score, "error": None}]] * prompts,
            },
            schema=PREDICTION_SCHEMA,
        )
        for model, stage, task, score in rows
    ]  # fmt: skip
    return pl.concat(frames)


def efficiency(params: int, latency: float) -> dict:
    return {
        "parameters": params, "checkpoint_mb": params * 2 / 2**20, "ttft_ms_p50": latency / 4,
        "latency_ms_p50": latency, "latency_ms_p95": latency * 1.2, "throughput_tokens_per_s": 1e5 / latency,
        "peak_memory_mb": params / 1e5, "cost_per_million_tokens_usd": latency / 100,
    }  # fmt: skip


def test_retention_is_student_over_routed_teacher(spec_file, tmp_path):
    spec = load_spec(spec_file)
    rows = [
        ("teacher_a", "teacher", "dates", 1.0), ("teacher_a", "teacher", "units", 0.8),
        ("teacher_a", "teacher", "reverse", 0.1), ("teacher_b", "teacher", "dates", 0.2),
        ("teacher_b", "teacher", "units", 0.0), ("teacher_b", "teacher", "reverse", 0.5),
    ]  # fmt: skip
    for student, after in (("student_m", 0.4), ("student_s", 0.2)):
        for task in ("dates", "units", "reverse"):
            rows += [(student, "before", task, 0.0), (student, "after", task, after)]
    eff = {
        "teacher_a": efficiency(1000, 40.0),
        "teacher_b": efficiency(1000, 40.0),
        "student_m": efficiency(250, 16.0),
        "student_s": efficiency(100, 10.0),
    }
    report = build_report(spec, predictions(rows), eff, "test cpu")
    m = report["tasks"]
    assert m["dates"]["students"]["student_m"]["retention"] == pytest.approx(0.4)
    assert m["units"]["students"]["student_m"]["retention"] == pytest.approx(0.5)
    assert m["reverse"]["students"]["student_m"]["retention"] == pytest.approx(0.8)  # routed to teacher_b
    student = report["models"]["student_m"]
    assert student["retention_min"] == pytest.approx(0.4)
    assert student["retention_mean"] == pytest.approx((0.4 + 0.5 + 0.8) / 3)
    assert student["vs_teachers"]["teacher_a"]["parameter_ratio"] == 0.25
    assert student["vs_teachers"]["teacher_a"]["latency_speedup"] == 2.5

    md = to_markdown(report)
    assert (
        "| reverse | **exact_match** | teacher_b | 0.100 [0.100, 0.100] | 0.500 [0.500, 0.500] | 0.000 | "
        "0.400 [0.400, 0.400] | 80.0% [80.0%, 80.0%] |"
    ) in md
    assert "| student_s | student | 100 |" in md
    md_path, json_path = write_report(report, tmp_path / "report")
    assert json.loads(json_path.read_text()) == report
    assert md_path.read_text().startswith("# Distillation report")


def _predictions(model: str, stage: str, task: str, right: int, of: int = 4) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": model, "stage": stage, "task": task, "prompt_id": [f"{task}{i}" for i in range(of)],
            "prompt": "q", "prediction": "x", "reference": "x", "metric": "exact_match",
            "score": [1.0] * right + [0.0] * (of - right),
            "scores": [[{"metric": "exact_match", "score": float(i < right), "error": None}] for i in range(of)],
        },
        schema=PREDICTION_SCHEMA,
    )  # fmt: skip


def test_assemble_report_writes_the_report_from_the_evaluation_frames(spec_file, tmp_path):
    """What the distillation_report asset hands over, in plain frames: report.json, report.md and the plot."""
    spec = load_spec(spec_file)
    routed = {"dates": "teacher_a", "units": "teacher_a", "reverse": "teacher_b"}
    teacher_evaluation = {
        f"{teacher}|{task}": _predictions(teacher, "teacher", task, 4 if routed[task] == teacher else 2)
        for teacher in ("teacher_a", "teacher_b")
        for task in routed
    }
    student_evaluation = {  # 3 of 4 right after distillation for student_m, 2 for student_s
        s: pl.concat(
            [_predictions(s, "before", task, 0) for task in routed]
            + [_predictions(s, "after", task, after) for task in routed]
        )
        for s, after in (("student_m", 3), ("student_s", 2))
    }
    sizes = {"teacher_a": (1000, 40.0), "teacher_b": (1000, 44.0), "student_m": (250, 16.0), "student_s": (100, 10.0)}
    model_efficiency = pl.DataFrame(
        [{"model": n, "role": "teacher" if n.startswith("t") else "student", "hardware": "test cpu", **efficiency(*v)}
         for n, v in sizes.items()]
    )  # fmt: skip
    curated = {
        f"{teacher}|{task}": pl.DataFrame(
            {"teacher": teacher, "task": task, "prompt_id": ["p0", "p1"], "prompt": ["q0", "q1"],
             "completion": ["a", ""], "verified": [True, False], "dropped_by": [None, "empty"],
             "why": [None, "the completion is empty"]}
        )
        for task, teacher in routed.items()
    }  # fmt: skip
    training_set = pl.DataFrame(
        {
            "teacher": list(routed.values()),
            "task": list(routed),
            "teacher_version": "v1",
            "prompt": "q0",
            "completion": "a",
        }
    )
    checkpoints = tmp_path / "checkpoints"
    for s in ("student_m", "student_s"):
        (checkpoints / s).mkdir(parents=True)
        (checkpoints / s / "training_metrics.json").write_text(json.dumps({"train_seconds": 7.0, "loss_history": [1]}))
        write_lineage(checkpoints / s, {"checkpoint_version": f"c-{s}", "training_set_version": "old"})
    routing_table = pl.DataFrame(
        [{"task": task, "teacher": teacher, "dev_score": None, "dev_prompts": 0, "routed": True, "mode": "fixed"}
         for task, teacher in routed.items()],
        schema_overrides={"dev_score": pl.Float64},
    )  # fmt: skip

    report, files = assemble_report(
        spec,
        teacher_evaluation=teacher_evaluation,
        student_evaluation=student_evaluation,
        model_efficiency=model_efficiency,
        curated_completions=curated,
        training_set=training_set,
        routing_table=routing_table,
        checkpoints={s: checkpoints / s for s in ("student_m", "student_s")},
        out_dir=tmp_path / "report",
    )
    assert report["tasks"]["reverse"]["students"]["student_m"]["retention"] == pytest.approx(0.75)
    assert report["hardware"] == "test cpu" and report["routing"] == routed
    assert report["methods"][0]["train_seconds"] == 7.0
    assert report["data"][0]["generated"] == 2 and report["data"][0]["dropped"]["empty"] == 1
    assert report["lineage"]["checkpoints"]["student_s"]["checkpoint_version"] == "c-student_s"
    assert report["pareto_front"] == ["student_s", "student_m", "teacher_a"]
    assert json.loads(files.json.read_text()) == report
    assert f"![quality vs latency]({files.plot.name})" in files.markdown.read_text()
    assert files.plot.parent == files.markdown.parent and files.plot.read_bytes()[:4] == b"\x89PNG"
