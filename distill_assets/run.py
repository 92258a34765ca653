"""Run the whole pipeline headless: `python -m distill_assets.run [--spec distill.yaml]`.

Materializes every asset, partition by partition and in dependency order, into the
persistent Dagster instance ($DAGSTER_HOME, by default `.dagster_home/` in the project),
so the runs, their metadata and the lineage are there to inspect in `dagster dev`
afterwards. Prints where the report is and its headline numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.partitions import Partitions, routed_keys
from distill_assets.routing import routed_partition_keys
from distill_assets.spec import SpecError, default_spec_path, load_spec
from resources.storage import ArtifactStore

PROJECT_DIR = Path(__file__).resolve().parent.parent


def instance_home() -> Path:
    """$DAGSTER_HOME, or the project's .dagster_home/ with the project's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_DIR / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(PROJECT_DIR / "dagster.yaml", config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def plan(spec_path: Path, all_partitions: bool = False) -> list[tuple[list[str], list[str | None] | Callable]]:
    """(asset keys, partition keys) steps in dependency order.

    With `routing: auto` the teachers are evaluated first and the routing table decides
    which teacher x task partitions to generate: those steps' keys are a function, called
    when the step is reached.
    """
    spec = load_spec(spec_path)
    parts = Partitions.from_spec(spec)
    data = (["curated_inputs", "eval_set", "dev_set"], parts.task.get_partition_keys())
    teachers = [(["teacher_evaluation"], parts.teacher_task.get_partition_keys()), (["routing_table"], [None])]
    students = [
        (["training_set"], [None]),
        (["student_checkpoint"], parts.student.get_partition_keys()),
    ]
    tail = [
        (["student_evaluation"], parts.student.get_partition_keys()),
        (["model_efficiency"], [None]),
        (["distillation_report"], [None]),
    ]
    if spec.routing_mode == "auto":
        table = ArtifactStore(root=str(spec.storage_path())).frame_path("routing_table")

        def routed() -> list[str]:
            return routed_partition_keys(pl.read_parquet(table))

        generation = parts.teacher_task.get_partition_keys() if all_partitions else routed
        return [data, *teachers, (["synthetic_completions"], generation), (["curated_completions"], routed),
                *students, *tail]  # fmt: skip
    generation = parts.teacher_task.get_partition_keys() if all_partitions else routed_keys(spec)
    return [
        data,
        (["synthetic_completions"], generation),
        (["curated_completions"], routed_keys(spec)),
        *students,
        *teachers,
        *tail,
    ]


def run_pipeline(
    defs: dg.Definitions, steps, instance: dg.DagsterInstance, echo=print, log_level: str = "INFO", observe=True
) -> None:
    if observe:  # teacher versions first: each materialization records the ones it was built from
        from distill_assets.backfill import observe_teachers

        observe_teachers(defs, instance)
    assets = [*(defs.assets or []), *(defs.asset_checks or [])]  # checks run with the assets they guard
    resources = dict(defs.resources or {})
    # The run log keeps every event; the console shows the assets' own progress lines.
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    for keys, partition_keys in steps:
        for partition_key in partition_keys() if callable(partition_keys) else partition_keys:
            label = f"{'+'.join(keys)}" + (f"[{partition_key}]" if partition_key else "")
            started = time.time()
            result = dg.materialize(
                assets,
                selection=[dg.AssetKey(k) for k in keys],
                partition_key=partition_key,
                resources=resources,
                instance=instance,
                run_config=run_config,
                raise_on_error=False,
            )
            if not result.success:
                failed = [
                    f"{e.asset_key.to_user_string()}:{e.check_name}"
                    for e in result.get_asset_check_evaluations()
                    if not e.passed
                ]
                because = f"; blocking check(s) failed: {', '.join(failed)}" if failed else ""
                raise SystemExit(
                    f"FAILED: {label} (run {result.run_id}){because}; nothing downstream ran. "
                    "See `dagster dev` or the log above"
                )
            echo(f"  done {label} in {time.time() - started:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=default_spec_path(), help="the pipeline spec (distill.yaml)")
    parser.add_argument(
        "--all-partitions", action="store_true", help="generate every teacher x task, not only the routed ones"
    )
    args = parser.parse_args()
    os.environ["DISTILL_SPEC"] = str(args.spec.resolve())
    home = instance_home()
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    from distill_assets.definitions import build_definitions

    try:
        defs = build_definitions(args.spec)
        steps = plan(args.spec, args.all_partitions)
    except SpecError as err:
        sys.exit(str(err))
    started = time.time()
    print(f"distill: running the pipeline of {args.spec} (Dagster instance at {home})", flush=True)
    with dg.DagsterInstance.get() as instance:
        run_pipeline(defs, steps, instance, echo=lambda line: print(line, flush=True))
    spec = load_spec(args.spec)
    report_dir = spec.storage_path() / "report"
    report = json.loads((report_dir / "report.json").read_text())
    print(f"\ndistill: finished in {time.time() - started:.0f}s")
    print(f"report: {report_dir / 'report.md'}\n        {report_dir / 'report.json'}")
    print(f"        {report_dir / 'quality_vs_latency.png'}")
    print("routing: " + ", ".join(f"{task} -> {teacher}" for task, teacher in sorted(report["routing"].items())))
    for name, model in report["models"].items():
        if model["role"] != "student":
            continue
        fastest = min(model["vs_teachers"].values(), key=lambda v: v["latency_speedup"])
        print(
            f"  {name}: keeps {model['retention_mean']:.1%} of the teachers' exact match "
            f"(lowest task {model['retention_min']:.1%}), {fastest['parameter_ratio']:.1%} of the parameters, "
            f"{fastest['latency_speedup']:.1f}x lower latency"
        )
    for row in report.get("multi_teacher", []):
        versus = ", ".join(f"{t} {v:.3f}" for t, v in row["teacher_means"].items() if v is not None)
        print(f"  {row['student']} (from {', '.join(row['teachers'])}): mean {row['student_mean']:.3f} vs {versus}")


if __name__ == "__main__":
    main()
