"""Living with a changing teacher, measured: a first run, a rerun with nothing changed, one teacher edited.

    python -m bench.teacher_change [--train 300 --eval 50 --steps 100 --dev 100 --teacher teacher_b --temperature 0.7]

On the shrunken demo (distill_assets/demo/shrunken.py: the demo's spec, routing included,
on fewer prompts and training steps), in a fresh SQLite instance and storage root:

1. the full first run (`run_pipeline`, what `python -m distill_assets.run` does);
2. the backfill with nothing changed (`python -m distill_assets.backfill`);
3. the backfill after changing one teacher's temperature in the spec.

Prints the wall time, partitions materialized and teacher requests of each: those sent to a
teacher, and those the generation cache answered, with the partitions that sent any.
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

from bench.common import stand_in_teacher
from distill_assets.assets.routing_assets import current_routing
from distill_assets.backfill import backfill
from distill_assets.definitions import build_definitions
from distill_assets.demo.shrunken import PROJECT_DIR, write_spec
from distill_assets.run import plan, quiet_progress_bars, run_ids, run_pipeline, store_of, teacher_requests
from distill_assets.spec import load_spec


def routing_of(spec_path: Path):
    """The routing in force for the stale check: the spec's, or its routing table's once materialized."""
    spec = load_spec(spec_path)
    return lambda: current_routing(spec, store_of(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=300, help="training prompts per task")
    parser.add_argument("--eval", type=int, default=50, help="eval prompts per task")
    parser.add_argument("--steps", type=int, default=100, help="training steps per student")
    parser.add_argument("--dev", type=int, help="dev prompts per task, for routing (default: the spec's)")
    parser.add_argument("--teacher", default="teacher_b", help="the teacher to change")
    parser.add_argument("--temperature", type=float, default=0.7, help="its new temperature")
    args = parser.parse_args()
    quiet_progress_bars()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench_teacher_change_"))
    teacher = stand_in_teacher()
    spec_path = write_spec(root, args.train, args.eval, args.steps, teacher, args.dev)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    rows = []
    quiet = lambda line: None  # noqa: E731
    with dg.DagsterInstance.from_config(str(home)) as instance:
        defs = build_definitions(spec_path)
        before = run_ids(instance)
        started = time.perf_counter()
        done = run_pipeline(defs, plan(spec_path, defs=defs), instance, echo=quiet, log_level="WARNING")
        seconds = time.perf_counter() - started
        rows.append(("full first run", seconds, len(done), teacher_requests(instance, run_ids(instance) - before)))

        done = backfill(defs, plan(spec_path, defs=defs), instance, echo=quiet, routing=routing_of(spec_path))
        rows.append(("rerun, nothing changed", done["seconds"], done["partitions"], done["per_partition"]))

        data = json.loads(json.dumps(yaml.safe_load(spec_path.read_text())))
        changed = next(t for t in data["teachers"] if t["name"] == args.teacher)
        changed.setdefault("generation", {})["temperature"] = args.temperature
        spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
        defs = build_definitions(spec_path)
        done = backfill(defs, plan(spec_path, defs=defs), instance, echo=print, routing=routing_of(spec_path))
        label = f"backfill, {args.teacher} temperature -> {args.temperature}"
        rows.append((label, done["seconds"], done["partitions"], done["per_partition"]))

    stand_in = " (a random stand-in teacher)" if teacher else ""
    print(f"\nshrunken demo{stand_in}: {args.train} training / {args.eval} eval prompts per task, "
          f"{args.steps} steps per student; storage {root}")  # fmt: skip
    print(f"{'':42s} {'wall s':>8s} {'partitions':>10s} {'requests':>9s} {'cached':>7s}  requests per asset[partition]")
    for label, seconds, partitions, counts in rows:
        sent = sum(c.get("requests_sent", 0) for c in counts.values())
        cached = sum(c.get("cached_hits", 0) for c in counts.values())
        per = ", ".join(f"{p} {c['requests_sent']}" for p, c in sorted(counts.items()) if c.get("requests_sent"))
        print(f"{label:42s} {seconds:8.1f} {partitions:10d} {sent:9d} {cached:7d}  {per or '-'}")


if __name__ == "__main__":
    main()
