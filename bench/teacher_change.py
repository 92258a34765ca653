"""Living with a changing teacher, measured: a first run, a rerun with nothing changed, one teacher edited.

    python -m bench.teacher_change [--train 300 --eval 50 --steps 100 --teacher teacher_b --temperature 0.7]

On the shrunken demo (bench/shrunken_demo.py: the demo's 2 teachers x 3 tasks and its
students, fewer prompts and training steps), in a fresh SQLite instance and storage root:

1. the full first run (`run_pipeline`, what `python -m distill_assets.run` does);
2. the backfill with nothing changed (`python -m distill_assets.backfill`);
3. the backfill after changing one teacher's temperature in the spec.

Prints the wall time, partitions materialized and teacher requests (sent to the teacher,
not answered by the generation cache) of each, per teacher x task partition.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from bench.shrunken_demo import PROJECT_DIR, demo_teachers_or_random, write_spec
from distill_assets.backfill import backfill, generation_counts
from distill_assets.definitions import build_definitions
from distill_assets.run import plan, run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=300, help="training prompts per task")
    parser.add_argument("--eval", type=int, default=50, help="eval prompts per task")
    parser.add_argument("--steps", type=int, default=100, help="training steps per student")
    parser.add_argument("--teacher", default="teacher_b", help="the teacher to change")
    parser.add_argument("--temperature", type=float, default=0.7, help="its new temperature")
    args = parser.parse_args()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench_teacher_change_"))
    teachers = demo_teachers_or_random()
    spec_path = write_spec(root, args.train, args.eval, args.steps, teachers)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    rows = []
    quiet = lambda line: None  # noqa: E731
    with dg.DagsterInstance.from_config(str(home)) as instance:
        defs = build_definitions(spec_path)
        before = {r.dagster_run.run_id for r in instance.get_run_records()}
        started = time.perf_counter()
        run_pipeline(defs, plan(spec_path), instance, echo=quiet, log_level="WARNING")
        seconds = time.perf_counter() - started
        runs = {r.dagster_run.run_id for r in instance.get_run_records()} - before
        counts = generation_counts(instance, runs)
        rows.append(("full first run", seconds, sum(len(p) for _, p in plan(spec_path)), counts))

        done = backfill(defs, plan(spec_path), instance, echo=quiet)
        rows.append(("rerun, nothing changed", done["seconds"], done["partitions"], done.get("per_partition", {})))

        data = json.loads(json.dumps(yaml.safe_load(spec_path.read_text())))
        teacher = next(t for t in data["teachers"] if t["name"] == args.teacher)
        teacher.setdefault("generation", {})["temperature"] = args.temperature
        spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
        defs = build_definitions(spec_path)
        done = backfill(defs, plan(spec_path), instance, echo=print)
        label = f"backfill, {args.teacher} temperature -> {args.temperature}"
        rows.append((label, done["seconds"], done["partitions"], done.get("per_partition", {})))

    stand_in = " (random stand-in teachers)" if teachers else ""
    print(f"\nshrunken demo{stand_in}: {args.train} training / {args.eval} eval prompts per task, "
          f"{args.steps} steps per student; storage {root}")  # fmt: skip
    print(f"{'':42s} {'wall s':>8s} {'partitions':>10s} {'requests':>9s}  per teacher x task")
    for label, seconds, partitions, counts in rows:
        sent = sum(c.get("requests_sent", 0) for c in counts.values())
        per = ", ".join(f"{p} {c.get('requests_sent', 0)}" for p, c in sorted(counts.items())) or "-"
        print(f"{label:42s} {seconds:8.1f} {partitions:10d} {sent:9d}  {per}")


if __name__ == "__main__":
    main()
