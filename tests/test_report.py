import json

import polars as pl
import pytest

from distill_assets.metrics import exact_match
from distill_assets.report import build_report, to_markdown, write_report
from distill_assets.spec import load_spec


def test_exact_match_ignores_surrounding_whitespace_only():
    assert exact_match(" 2021-03-05\n", "2021-03-05") == 1.0
    assert exact_match("2021-3-5", "2021-03-05") == 0.0
    assert exact_match("", "x") == 0.0


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
    scores = pl.DataFrame(rows, schema=["model", "stage", "task", "score"], orient="row")
    eff = {
        "teacher_a": efficiency(1000, 40.0),
        "teacher_b": efficiency(1000, 40.0),
        "student_m": efficiency(250, 16.0),
        "student_s": efficiency(100, 10.0),
    }
    report = build_report(spec, scores, eff, "test cpu")
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
    assert "| reverse | teacher_b | 0.100 | 0.500 | 0.000 | 0.400 | 80.0% |" in md
    assert "| student_s | student | 100 |" in md
    md_path, json_path = write_report(report, tmp_path / "report")
    assert json.loads(json_path.read_text()) == report
    assert md_path.read_text().startswith("# Distillation report")
