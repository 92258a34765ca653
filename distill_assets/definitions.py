"""The single entry point: `dagster dev` and `dagster asset materialize` load `defs` from here."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dagster as dg

from distill_assets import k8s_deploy
from distill_assets.assets import (
    curation_assets,
    data_assets,
    evaluation_assets,
    generation_assets,
    quality_checks,
    routing_assets,
    spec_assets,
    training_assets,
)
from distill_assets.partitions import Partitions
from distill_assets.spec import default_spec_path, load_spec
from resources.accelerator import Accelerator
from resources.storage import ArtifactStore, ParquetIOManager

# Partitioned asset checks and the multi-to-single partition mapping are chosen on purpose;
# their beta/preview notices would print on every load of the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions(spec_path: str | os.PathLike) -> dg.Definitions:
    spec = load_spec(spec_path)
    partitions = Partitions.from_spec(spec)
    store = ArtifactStore(root=spec.storage_location(), local_root=str(spec.storage_path()))
    assets = [
        *spec_assets.build(spec, partitions, Path(spec_path)),
        *data_assets.build(spec, partitions),
        *generation_assets.build(spec, partitions),
        *curation_assets.build(spec, partitions),
        *routing_assets.build(spec, partitions),
        *training_assets.build(spec, partitions),
        *evaluation_assets.build(spec, partitions),
    ]
    return dg.Definitions(
        assets=assets,
        executor=k8s_deploy.executor(),  # DISTILL_EXECUTOR=k8s: one pod per step on Kubernetes
        asset_checks=quality_checks.build(spec, partitions),
        sensors=spec_assets.build_sensors(spec, Path(spec_path), lambda: routing_assets.current_routing(spec, store)),
        resources={
            "accelerator": Accelerator(),
            "store": store,
            "io_manager": ParquetIOManager(store=store),
        },
    )


defs = build_definitions(default_spec_path())
