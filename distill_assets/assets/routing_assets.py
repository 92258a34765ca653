"""Stage 2a: the routing table, which teacher generates each task's training data (measured or fixed)."""

import dagster as dg
import polars as pl

from distill_assets.partitions import Partitions
from distill_assets.routing import decide_routing, dev_scores
from distill_assets.spec import Spec
from distill_assets.tables import markdown_table


def build(spec: Spec, partitions: Partitions) -> list:
    @dg.asset(
        description="Per task, each candidate teacher's score on the dev split and the teacher routed to generate "
        "its training data: the best on dev with `routing: auto`, the spec's assignment with `routing: fixed`.",
        ins={"teacher_evaluation": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
        group_name="routing",
        kinds={"polars"},
    )
    def routing_table(context: dg.AssetExecutionContext, teacher_evaluation: dict[str, pl.DataFrame]) -> pl.DataFrame:
        table = decide_routing(spec, dev_scores(pl.concat(list(teacher_evaluation.values()))))
        routed = table.filter(pl.col("routed")).select("task", "teacher").rows()
        context.log.info(f"routing ({spec.routing_mode}): " + ", ".join(f"{t} -> {r}" for t, r in routed))
        context.add_output_metadata(
            {
                "mode": spec.routing_mode,
                "table": dg.MetadataValue.md(markdown_table(table)),
                **{f"routed/{task}": teacher for task, teacher in routed},
            }
        )
        return table

    return [routing_table]
