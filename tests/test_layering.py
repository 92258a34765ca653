"""The logic lives in plain functions: those modules import without Dagster (only the asset shells need it)."""

import subprocess
import sys
from pathlib import Path

PLAIN = [
    "distill_assets.curation",
    "distill_assets.evaluation",
    "distill_assets.generation",
    "distill_assets.inputs",
    "distill_assets.routing",
    "distill_assets.training",
    "distill_assets.training_set",
    "distill_assets.methods",
    "resources.transformers_backend",
    "bench.methods_seeds",
]

BLOCK_DAGSTER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "dagster" or name.startswith("dagster."):
            raise ImportError(f"{name} imported by a plain-function module")
sys.meta_path.insert(0, Block())
import importlib
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def test_logic_modules_import_without_dagster():
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DAGSTER, *PLAIN], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_blocker_catches_a_dagster_import():
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DAGSTER, "distill_assets.partitions"], cwd=root, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "imported by a plain-function module" in result.stderr
