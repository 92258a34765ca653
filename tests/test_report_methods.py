"""The report's method comparison, routing table and multi-teacher section."""

import pytest

from distill_assets.report import build_report, to_markdown
from distill_assets.spec import load_spec
from tests.test_report import efficiency, predictions


def test_multi_teacher_student_against_each_teacher_and_methods_table(spec_file):
    spec = load_spec(spec_file)
    rows = [
        ("teacher_a", "teacher", "dates", 1.0), ("teacher_a", "teacher", "units", 0.8),
        ("teacher_a", "teacher", "reverse", 0.0), ("teacher_b", "teacher", "dates", 0.0),
        ("teacher_b", "teacher", "units", 0.0), ("teacher_b", "teacher", "reverse", 0.9),
    ]  # fmt: skip
    for student, after in (("student_m", 0.7), ("student_s", 0.5)):
        rows += [(student, "after", task, after) for task in ("dates", "units", "reverse")]
    sizes = {"teacher_a": (1000, 40.0), "teacher_b": (1000, 40.0), "student_m": (250, 16.0), "student_s": (100, 10.0)}
    eff = {n: efficiency(*v) for n, v in sizes.items()}
    table = [
        {"task": task, "teacher": teacher, "dev_score": score, "dev_prompts": 10, "routed": routed, "mode": "auto"}
        for task, teacher, score, routed in (
            ("dates", "teacher_a", 0.9, True),
            ("dates", "teacher_b", 0.1, False),
            ("units", "teacher_a", 0.8, True),
            ("reverse", "teacher_b", 1.0, True),
        )
    ]
    training = {
        "student_m": {"train_seconds": 12.0, "peak_memory_mb": 80.0, "teachers": ["teacher_a", "teacher_b"]},
        "student_s": {"train_seconds": 5.0, "peak_memory_mb": 40.0, "teachers": ["teacher_a"]},
    }
    report = build_report(spec, predictions(rows), eff, "test cpu", routing_table=table, training=training)
    assert report["models"]["teacher_a"]["mean_score"] == pytest.approx(0.6)
    assert report["models"]["teacher_b"]["mean_score"] == pytest.approx(0.3)
    [multi] = report["multi_teacher"]  # student_s learned from one teacher only
    assert multi["student"] == "student_m" and multi["student_mean"] == pytest.approx(0.7)
    assert multi["above_every_teacher"]
    methods = {m["student"]: m for m in report["methods"]}
    assert methods["student_s"]["scores"] == {"dates": 0.5, "reverse": 0.5, "units": 0.5}
    assert methods["student_m"]["train_seconds"] == 12.0 and methods["student_m"]["method"] == "sft"
    md = to_markdown(report, image="quality_vs_latency.png")
    assert "| dates | teacher_b | 0.100 | 10 |  |" in md
    assert "| student_m | 16x1 | sft | 2 x 4 | 0.700 | 0.700 | 0.700 | 0.700 [0.700, 0.700] | 12 | 80 |" in md
    assert "above every teacher" in md and "![quality vs latency](quality_vs_latency.png)" in md
    assert "bench.methods_seeds" not in md  # sizes differ: no method comparison to qualify
    for m in report["methods"]:
        m["size"] = "16x1"
    assert "trains them over several seeds" in to_markdown(report, image="quality_vs_latency.png")
