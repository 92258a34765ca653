"""Stage 2a: the routing table, which teacher generates each task's training data (measured or fixed)."""

import dagster as dg
import polars as pl

from distill_assets.partitions import Partitions
from distill_assets.routing import ROUTING_TABLE, Routing, decide_routing, dev_scores
from distill_assets.spec import Spec
from distill_assets.tables import markdown_table
from resources.storage import ArtifactStore, partitions_in, read_frame, scan_frame

CURATED = "curated_completions"


def current_routing(spec: Spec, store: ArtifactStore) -> Routing:
    """The routing in force now: the spec's, or the routing table's once it has been materialized."""
    path = store.frame_path(ROUTING_TABLE)
    return Routing.resolve(spec, read_frame(path) if path.exists() else None)


def routed_inputs(spec: Spec) -> tuple[dict, list]:
    """(ins, deps) of an asset that reads the routed curated_completions partitions.

    A fixed routing is known when the definitions load: the input maps to exactly those
    partitions. A measured one is known only at run time, so it cannot be a partition
    mapping: the asset reads the routing table and depends on every partition instead.
    """
    routing = Routing.from_spec(spec)
    if routing.measured:
        return {ROUTING_TABLE: dg.AssetIn()}, [dg.AssetDep(CURATED, partition_mapping=dg.AllPartitionMapping())]
    mapping = dg.SpecificPartitionsPartitionMapping(routing.partition_keys())
    return {CURATED: partitions_in(mapping, lazy=True)}, []


def routed_completions(spec: Spec, store: ArtifactStore, inputs: dict) -> tuple[Routing, dict[str, pl.LazyFrame]]:
    """The routing and its curated_completions partitions as lazy scans, from the inputs `routed_inputs` declared."""
    if CURATED in inputs:
        return Routing.from_spec(spec), inputs[CURATED]
    routing = Routing.from_table(inputs[ROUTING_TABLE])
    return routing, {key: scan_frame(store.frame_path(CURATED, key)) for key in routing.partition_keys()}


def build(spec: Spec, partitions: Partitions) -> list:
    @dg.asset(
        name=ROUTING_TABLE,
        description="Per task, each candidate teacher's score on the dev split and the teacher routed to generate "
        "its training data: the best on dev with `routing: auto`, the spec's assignment with `routing: fixed`.",
        ins={"teacher_evaluation": partitions_in()},
        group_name="routing",
        kinds={"polars"},
    )
    def routing_table(context: dg.AssetExecutionContext, teacher_evaluation: dict[str, pl.DataFrame]) -> pl.DataFrame:
        table = decide_routing(spec, dev_scores(pl.concat(list(teacher_evaluation.values()))))
        routing = Routing.from_table(table)
        context.log.info(f"routing ({spec.routing_mode}): {routing.describe()}")
        context.add_output_metadata(
            {
                "mode": spec.routing_mode,
                "table": dg.MetadataValue.md(markdown_table(table)),
                **{f"routed/{task}": teacher for task, teacher in sorted(routing.teachers.items())},
            }
        )
        return table

    return [routing_table]
