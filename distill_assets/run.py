"""Run the pipeline headless: `python -m distill_assets.run [--spec distill.yaml] [--force]`.

Materializes what is missing or stale, partition by partition and in dependency order,
into the persistent Dagster instance ($DAGSTER_HOME, by default `.dagster_home/` in the
project), and prints what it skipped and why; `--force` materializes everything again.
The runs, their metadata and the lineage are there to inspect in `dagster dev`
afterwards. Prints where the report is and its headline numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from distill_assets.assets.routing_assets import current_routing
from distill_assets.definitions import build_definitions
from distill_assets.execution import MODEL_POOL, Workers, default_workers, materialize, pool_slots, quiet_progress_bars
from distill_assets.partitions import is_routed
from distill_assets.routing import ROUTING_TABLE, Routing
from distill_assets.spec import Spec, SpecError, default_spec_path, load_spec
from distill_assets.staleness import StalePlan, StaleTracker, Steps, observe_spec
from resources.storage import ArtifactStore

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Assets whose materializations count teacher requests (their metadata has requests_sent, cached_hits).
ASKS_TEACHERS = ("synthetic_completions", "teacher_evaluation", "curated_completions")


def instance_home() -> Path:
    """$DAGSTER_HOME, or the project's .dagster_home/ with the project's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_DIR / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(PROJECT_DIR / "dagster.yaml", config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def store_of(spec: Spec) -> ArtifactStore:
    return ArtifactStore(root=spec.storage_location(), local_root=str(spec.storage_path()))


def plan(spec_path: Path, all_partitions: bool = False, defs: dg.Definitions | None = None) -> Steps:
    """(asset names, partition keys) steps in dependency order, read off the definitions' asset graph.

    Each asset definition (a multi-asset is one step) is a step, with every partition, except
    that assets tagged routed (partitions.ROUTED_TAG) get the routed teacher x task partitions only (all of them with
    `all_partitions`). When the routing is measured, those are known only once the routing table
    is: they are a function then, called when the step is reached, and the step is ordered after
    the routing table.
    """
    spec = load_spec(spec_path)
    defs = defs or build_definitions(spec_path)
    graph = defs.resolve_asset_graph()
    routing = Routing.from_spec(spec)
    materializable = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    nodes = list(dict.fromkeys(graph.get(k).assets_def for k in materializable))  # a multi-asset is one node
    routed = {graph.get(k).assets_def for k in materializable if is_routed(graph.get(k).tags)}
    after = {n: {graph.get(p).assets_def for k in n.keys for p in graph.get(k).parent_keys} & set(nodes) for n in nodes}
    after = {n: parents - {n} for n, parents in after.items()}
    if routing.measured:
        table = graph.get(dg.AssetKey(ROUTING_TABLE)).assets_def
        for n in routed:
            after[n].add(table)
    steps: Steps = []
    for node in _in_order(nodes, after):
        names = sorted(k.to_user_string() for k in node.keys)
        if node.partitions_def is None:
            steps.append((names, [None]))
        elif node in routed and not all_partitions:
            steps.append((names, routing.partition_keys() if not routing.measured else _routed_keys(spec)))
        else:
            steps.append((names, list(node.partitions_def.get_partition_keys())))
    return steps


def _in_order(nodes: list, after: dict) -> list:
    """A topological order that keeps the graph's own order among nodes that are ready together."""
    done: list = []
    pending = list(nodes)
    while pending:
        ready = next(n for n in pending if after[n] <= set(done))
        done.append(ready)
        pending.remove(ready)
    return done


def _routed_keys(spec: Spec):
    """The routed partitions, read when the step is reached (the routing table is materialized by then)."""
    return lambda: current_routing(spec, store_of(spec)).partition_keys()


@dataclass
class Materializer:
    """Materializes steps into an instance; with `only_stale`, only what is missing or stale.

    With `workers` (worker processes; see execution.py) the partitions of a step run side by
    side; without, one after another in this process.
    """

    defs: dg.Definitions
    instance: dg.DagsterInstance
    echo: Callable[[str], None] = print
    log_level: str = "INFO"
    only_stale: bool = False
    routing: Callable[[], Routing] | None = None  # the routing in force, for the stale check
    workers: Workers | None = None

    def run(self, steps: Steps, observe: bool = True) -> StalePlan:
        if observe:  # spec versions first: each materialization records the ones it was built from
            observe_spec(self.defs, self.instance)
        tracker = StaleTracker(self.defs, self.instance, self.routing) if self.only_stale else None
        done = StalePlan()
        for names, partitions in steps:
            if tracker:
                tracker.refresh()  # the data versions the steps before this one wrote
            todo: dict[str | None, str] = {}
            for partition in partitions() if callable(partitions) else partitions:
                why = tracker.reason(names, partition) if tracker else "forced"
                if why is None:
                    done.skipped.setdefault("+".join(names), []).append(partition)
                else:
                    todo[partition] = why
            for partition in self.materialize(names, todo):
                if tracker:
                    tracker.choose(names, partition)
                done.add(names, partition, todo[partition])
        for label, partitions in done.skipped.items():
            shown = f"[{', '.join(str(p) for p in partitions)}]" if partitions != [None] else ""
            self.echo(f"  skipped {label}{shown}: up to date")
        return done

    def materialize(self, names: list[str], why: dict[str | None, str]) -> Iterator[str | None]:
        """Materialize the partitions (keys of `why`, the reason for each), yielding each as it succeeds;
        exit when any failed, once the others running beside it have finished."""
        if self.workers and len(why) > 1:
            results = self.workers.materialize(names, list(why))
        else:
            results = (self._in_process(names, p) for p in why)
        failures = []
        for partition, seconds, error in results:
            label = "+".join(names) + (f"[{partition}]" if partition else "")
            if error:
                failures.append(f"FAILED: {label} ({error})")
                continue
            reason = "" if why[partition] == "forced" else f" ({why[partition]})"
            self.echo(f"  done {label} in {seconds:.1f}s{reason}")
            yield partition
        if failures:
            raise SystemExit("\n".join(failures) + "; nothing downstream ran. See `dagster dev` or the log above")

    def _in_process(self, names: list[str], partition: str | None) -> tuple[str | None, float, str | None]:
        started = time.time()
        error = materialize(self.defs, self.instance, names, partition, self.log_level)
        return partition, time.time() - started, error


def run_pipeline(
    defs: dg.Definitions,
    steps: Steps,
    instance: dg.DagsterInstance,
    echo=print,
    log_level: str = "INFO",
    observe: bool = True,
    only_stale: bool = False,
    routing: Callable[[], Routing] | None = None,
    workers: Workers | None = None,
) -> StalePlan:
    """Materialize `steps` (all of them, or with `only_stale` what is missing or stale); returns what ran."""
    return Materializer(defs, instance, echo, log_level, only_stale, routing, workers).run(steps, observe)


@contextmanager
def worker_processes(spec_path: Path, instance: dg.DagsterInstance, count: int) -> Iterator[Workers | None]:
    """`count` worker processes with the model pool opened to them, or None for one in-process worker."""
    if count < 2 or instance.is_ephemeral:  # an ephemeral instance lives in this process only
        yield None
        return
    workers = Workers(spec_path, count)
    try:
        with pool_slots(instance, MODEL_POOL, count):
            yield workers
    finally:
        workers.close()


def teacher_requests(instance: dg.DagsterInstance, run_ids: set[str]) -> dict[str, dict[str, int]]:
    """'asset[partition]' -> requests_sent and cached_hits, for what these runs materialized that asks teachers."""
    out: dict[str, dict[str, int]] = {}
    for asset in ASKS_TEACHERS:
        for record in instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records:
            meta = record.asset_materialization.metadata
            if record.run_id in run_ids and "requests_sent" in meta:
                out[f"{asset}[{record.asset_materialization.partition}]"] = {
                    k: int(meta[k].value) for k in ("requests_sent", "cached_hits") if k in meta
                }
    return out


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {r.dagster_run.run_id for r in instance.get_run_records()}


def print_report(spec: Spec) -> None:
    report_dir = spec.storage_path() / "report"
    if not (report_dir / "report.json").is_file():
        return
    report = json.loads((report_dir / "report.json").read_text())
    print(f"report: {report_dir / 'report.md'}\n        {report_dir / 'report.json'}")
    print(f"        {report_dir / 'quality_vs_latency.png'}")
    print("routing: " + ", ".join(f"{task} -> {teacher}" for task, teacher in sorted(report["routing"].items())))
    for name, model in report["models"].items():
        if model["role"] != "student":
            continue
        line = (
            f"  {name}: keeps {model['retention_mean']:.1%} of the teachers' headline score "
            f"(lowest task {model['retention_min']:.1%})"
        )
        if model["vs_teachers"]:  # empty when every teacher is served elsewhere and was not timed here
            fastest = min(model["vs_teachers"].values(), key=lambda v: v["latency_speedup"])
            line += f", {fastest['parameter_ratio']:.1%} of the parameters"
            line += f", {fastest['latency_speedup']:.1f}x lower latency"
        print(line)
    for row in report.get("multi_teacher", []):
        versus = ", ".join(f"{t} {v:.3f}" for t, v in row["teacher_means"].items() if v is not None)
        print(f"  {row['student']} (from {', '.join(row['teachers'])}): mean {row['student_mean']:.3f} vs {versus}")


def load(spec_path: Path) -> tuple[Spec, dg.Definitions]:
    """The spec and its definitions, or exit with the spec's error (a message naming the field)."""
    os.environ["DISTILL_SPEC"] = str(spec_path.resolve())
    try:
        return load_spec(spec_path), build_definitions(spec_path)
    except SpecError as err:
        sys.exit(str(err))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=default_spec_path(), help="the pipeline spec (distill.yaml)")
    parser.add_argument("--force", action="store_true", help="materialize everything, stale or not")
    parser.add_argument(
        "--all-partitions", action="store_true", help="generate every teacher x task, not only the routed ones"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="partitions of a step materialized side by side, in one-thread processes (default: one per core "
        "without a GPU, 1 with one)",
    )
    args = parser.parse_args()
    home = instance_home()
    quiet_progress_bars()
    spec, defs = load(args.spec)
    steps = plan(args.spec, args.all_partitions, defs)
    started = time.time()
    what = "everything" if args.force else "what is missing or stale"
    print(f"distill: materializing {what} in {args.spec} (Dagster instance at {home})", flush=True)
    with dg.DagsterInstance.get() as instance:
        before = run_ids(instance)
        echo = lambda line: print(line, flush=True)  # noqa: E731
        routing = lambda: current_routing(spec, store_of(spec))  # noqa: E731
        with worker_processes(args.spec, instance, args.workers) as workers:
            done = run_pipeline(
                defs, steps, instance, echo=echo, only_stale=not args.force, routing=routing, workers=workers
            )
        requests = teacher_requests(instance, run_ids(instance) - before)
    sent = sum(r.get("requests_sent", 0) for r in requests.values())
    cached = sum(r.get("cached_hits", 0) for r in requests.values())
    print(f"\ndistill: finished in {time.time() - started:.0f}s: {len(done)} partition(s) materialized")
    print(f"teacher requests sent: {sent} ({cached} answered by the generation cache)")
    print_report(spec)


if __name__ == "__main__":
    main()
