"""Orchestration overhead: the demo materialized through Dagster against the same steps in one plain process.

    python -m bench.orchestration_overhead [--train 300 --eval 50 --steps 100 --dev 100]

Both sides run the same asset and check functions on the same shrunken demo spec
(distill_assets/demo/shrunken.py), each with a fresh storage root and generation cache. The
Dagster side is `distill_assets.run.run_pipeline` (one in-process run per partition, a
SQLite instance on disk, the parquet IO manager, blocking checks). The plain side calls
each asset's and check's function directly, reading and writing the same parquet files.
Prints both wall times and their ratio (target: at most 1.15x).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl

from bench.common import stand_in_teacher
from distill_assets.definitions import build_definitions
from distill_assets.demo.shrunken import PROJECT_DIR, write_spec
from distill_assets.frames import write_parquet
from distill_assets.run import plan, quiet_progress_bars, run_pipeline
from resources.storage import ArtifactStore, is_lazy_input, read_frame, scan_frame


class PlainContext:
    """What the asset and check functions use of a Dagster context, and nothing else."""

    def __init__(self, partition_key, log: logging.Logger):
        self.partition_key, self.log, self.metadata = partition_key, log, {}

    def add_output_metadata(self, metadata: dict, output_name: str | None = None) -> None:
        self.metadata.update(metadata)


def _key(defs: dg.Definitions, partition: str | None, asset: dg.AssetKey):
    partitions_def = defs.resolve_asset_graph().get(asset).partitions_def
    if partition is not None and isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return partitions_def.get_partition_key_from_str(partition)
    return partition


def _load(store: ArtifactStore, graph, child: dg.AssetKey, partition: str | None, upstream: dg.AssetKey, read):
    """An input as the parquet IO manager would give it: one frame, or a dict keyed by partition."""
    name = upstream.to_user_string()
    if not graph.get(upstream).is_partitioned:
        return read(store.frame_path(name))
    subset = graph.get_parent_partition_keys_for_child(partition, upstream, child).partitions_subset
    keys = list(subset.get_partition_keys())
    if partition is not None and len(keys) == 1:
        return read(store.frame_path(name, keys[0]))
    return {k: read(store.frame_path(name, k)) for k in keys}


def _call(node, defs, store, graph, asset: dg.AssetKey, partition, log):
    """Call a node's own function with its inputs and resources; the asset whose partition it is is `asset`."""
    fn = node.op.compute_fn.decorated_fn
    resources = dict(defs.resources or {})
    kwargs = {}
    for input_name, upstream in node.keys_by_input_name.items():
        input_def = node.op.input_def_named(input_name)
        if input_def.dagster_type.is_nothing:
            continue  # a dependency without data (teacher_spec, student_checkpoint)
        read = scan_frame if is_lazy_input(input_def.dagster_type, input_def.metadata) else read_frame
        if upstream == asset:  # a check reading the asset it guards
            kwargs[input_name] = read(store.frame_path(asset.to_user_string(), partition))
        elif upstream not in graph.get(asset).parent_keys:  # a check's extra input: all its partitions
            name = upstream.to_user_string()
            parts = graph.get(upstream).partitions_def.get_partition_keys()
            kwargs[input_name] = {k: read(store.frame_path(name, k)) for k in parts}
        else:
            kwargs[input_name] = _load(store, graph, asset, partition, upstream, read)
    params = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    kwargs |= {name: resources[name] for name in params if name in resources}
    context = PlainContext(_key(defs, partition, asset), log)
    return fn(context, **kwargs) if params and params[0] == "context" else fn(**kwargs)


def run_plain(defs: dg.Definitions, steps, store: ArtifactStore) -> None:
    graph = defs.resolve_asset_graph()
    log = logging.getLogger("plain")
    by_key = {k: a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    checks_by_asset: dict[dg.AssetKey, list] = {}
    for check in defs.asset_checks or []:
        for check_key in check.check_keys:
            checks_by_asset.setdefault(check_key.asset_key, [])
            if check not in checks_by_asset[check_key.asset_key]:
                checks_by_asset[check_key.asset_key].append(check)
    for names, partitions in steps:
        keys = [dg.AssetKey(n) for n in names]
        node = by_key[keys[0]]
        for partition in partitions() if callable(partitions) else partitions:  # routed: known once routed
            result = _call(node, defs, store, graph, keys[0], partition, log)
            single = isinstance(result, (pl.DataFrame, pl.LazyFrame, dg.Output, dg.MaterializeResult))
            outputs = [result] if single else list(result)  # a multi-asset yields one Output per asset
            for out, key in zip(outputs, keys):
                value = out.value if isinstance(out, dg.Output) else out
                if isinstance(value, (pl.DataFrame, pl.LazyFrame)):
                    path = store.frame_path(key.to_user_string(), partition)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_parquet(value, str(path))
            for key in keys:
                for check in checks_by_asset.get(key, []):
                    checked = _call(check, defs, store, graph, key, partition, log)
                    for r in [checked] if isinstance(checked, dg.AssetCheckResult) else list(checked):
                        if not r.passed:
                            where = f"{key.to_user_string()}[{partition}]"
                            raise SystemExit(f"plain run: check {r.check_name} on {where} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=300, help="training prompts per task")
    parser.add_argument("--eval", type=int, default=50, help="eval prompts per task")
    parser.add_argument("--steps", type=int, default=100, help="training steps per student")
    parser.add_argument("--dev", type=int, help="dev prompts per task, for routing (default: the spec's)")
    args = parser.parse_args()
    quiet_progress_bars()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    teacher = stand_in_teacher()
    root = Path(tempfile.mkdtemp(prefix="bench_orchestration_"))
    times = {}
    for side in ("plain", "dagster"):
        spec_path = write_spec(root / side, args.train, args.eval, args.steps, teacher, args.dev)
        defs = build_definitions(spec_path)
        steps = plan(spec_path, defs=defs)
        started = time.perf_counter()
        if side == "plain":
            run_plain(defs, steps, defs.resources["store"])
        else:
            home = root / "dagster_home"  # a SQLite instance on disk, with the project's settings, like run.py's
            home.mkdir()
            shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
            with dg.DagsterInstance.from_config(str(home)) as instance:
                run_pipeline(defs, steps, instance, echo=lambda line: None, log_level="WARNING")
        times[side] = time.perf_counter() - started
        print(f"{side:8s} {times[side]:7.1f}s", flush=True)
    stand_in = ", a random stand-in teacher" if teacher else ""
    size = f"{args.train} training / {args.eval} eval prompts per task, {args.steps} steps per student{stand_in}"
    print(f"demo ({size}): Dagster / plain = {times['dagster'] / times['plain']:.3f}x")


if __name__ == "__main__":
    main()
