"""Routing decisions on fixed dev scores, the routing table in an auto-routed graph, and the report's figure."""

import dagster as dg
import polars as pl
import yaml

from distill_assets.definitions import build_definitions
from distill_assets.plots import pareto_front, write_quality_latency_plot
from distill_assets.routing import Routing, decide_routing
from distill_assets.run import plan, run_pipeline
from distill_assets.spec import load_spec
from tests.conftest import shrunken_spec


def auto_spec(tmp_path, teacher, **task_fields):
    data = shrunken_spec(tmp_path, teacher, train=16)
    data["routing"] = "auto"
    for task in data["tasks"]:
        task.update(dev_size=3, **task_fields)
    data["teachers"][0].pop("tasks")  # a candidate for every task
    data["teachers"][1]["tasks"] = ["reverse", "units"]
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def scores(rows):
    return pl.DataFrame(rows, schema=["teacher", "task", "score", "n"], orient="row")


def test_auto_routes_each_task_to_its_best_teacher_on_dev(tmp_path, tiny_teacher):
    spec = load_spec(auto_spec(tmp_path, tiny_teacher))
    table = decide_routing(
        spec,
        scores([("teacher_a", "dates", 0.9, 3), ("teacher_b", "dates", 1.0, 3),  # b is no candidate for dates
                ("teacher_a", "units", 0.4, 3), ("teacher_b", "units", 0.7, 3),
                ("teacher_a", "reverse", 0.5, 3), ("teacher_b", "reverse", 0.5, 3)]),  # a tie: listed first wins
    )  # fmt: skip
    assert Routing.from_table(table).teachers == {"dates": "teacher_a", "units": "teacher_b", "reverse": "teacher_a"}
    assert Routing.from_table(table).measured
    assert table.filter(pl.col("task") == "dates").height == 1  # only candidates are listed
    assert set(table["mode"]) == {"auto"}


def test_fixed_routing_keeps_the_spec_and_shows_dev_scores(spec_file):
    spec = load_spec(spec_file)
    table = decide_routing(spec, scores([("teacher_b", "dates", 1.0, 5), ("teacher_a", "dates", 0.0, 5)]))
    assert Routing.from_table(table) == Routing.from_spec(spec) and not Routing.from_spec(spec).measured
    row = table.filter((pl.col("task") == "dates") & (pl.col("teacher") == "teacher_b")).row(0, named=True)
    assert row["dev_score"] == 1.0 and not row["routed"]


def test_auto_routed_graph_builds_the_training_set_from_the_routing_table(tmp_path, tiny_teacher):
    path = auto_spec(tmp_path, tiny_teacher)
    spec = load_spec(path)
    steps = plan(path)
    names = [keys[0] for keys, _ in steps]
    assert names.index("routing_table") < names.index("synthetic_completions")
    assert callable(dict((keys[0], parts) for keys, parts in steps)["synthetic_completions"])  # known at run time
    upto = steps[: names.index("training_set") + 1]
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(build_definitions(path), upto, instance, echo=lambda _: None)
    root = spec.storage_path() / "frames"
    table = pl.read_parquet(root / "routing_table/data.parquet")
    dev = pl.read_parquet(root / "dev_set/dates.parquet")
    train = pl.read_parquet(root / "curated_inputs/dates.parquet")
    assert dev.height == 3 and not set(dev["prompt_id"]) & set(train["prompt_id"])
    training = pl.read_parquet(root / "training_set/data.parquet")
    assert dict(training.select("task", "teacher").unique().iter_rows()) == Routing.from_table(table).teachers
    generated = {p.stem for p in (root / "synthetic_completions").glob("*.parquet")}
    assert len(generated) == 3  # only the routed teacher x task partitions were generated


def test_pareto_front_and_plot(tmp_path):
    points = {"t_big": (40.0, 0.9), "t_slow_bad": (50.0, 0.5), "s_m": (10.0, 0.8), "s_s": (5.0, 0.4), "s_x": (8.0, 0.3)}
    assert pareto_front(points) == ["s_s", "s_m", "t_big"]
    report = {
        "hardware": "test cpu",
        "models": {
            n: {"role": "teacher" if n.startswith("t_") else "student", "latency_ms_p50": lat, "mean_score": q}
            for n, (lat, q) in points.items()
        },
    }
    png = write_quality_latency_plot(report, tmp_path / "report" / "quality_vs_latency.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
