"""The demo is a plug-in: every core module imports with `distill_assets.demo` unavailable, as if deleted."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import distill_assets
import resources

ROOT = Path(__file__).resolve().parent.parent

BLOCK_DEMO = """
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "distill_assets.demo" or name.startswith("distill_assets.demo."):
            raise ImportError(f"{name} imported by a core module")
sys.meta_path.insert(0, Block())
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def core_modules() -> list[str]:
    """Every module of distill_assets (the demo package aside) and of resources."""
    names = []
    for package in (distill_assets, resources):
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if info.name == "distill_assets.demo" or info.name.startswith("distill_assets.demo."):
                continue
            names.append(info.name)
    return sorted(names)


def _import_blocked(modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_DEMO, *modules], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_core_modules_import_without_the_demo():
    modules = core_modules()
    assert {"distill_assets.verifiers", "distill_assets.definitions", "resources.storage"} <= set(modules)
    result = _import_blocked(modules)
    assert result.returncode == 0, result.stderr[-2000:]


USE_THE_CORE = """
import polars as pl
from distill_assets.curation import curate_completions
from distill_assets.spec import QualitySpec, TaskSpec
from distill_assets.verifiers import get_verifier

task = TaskSpec(name="capitals", source="capitals.jsonl", verifier="reference")
frame = pl.DataFrame({"prompt_id": ["a", "b"], "prompt": ["Capital of France?", "Capital of Peru?"],
                      "completion": ["Paris", "Quito"], "reference": ["Paris", "Lima"], "finish_reason": ["stop"] * 2})
curated = curate_completions(frame, QualitySpec(), get_verifier(task.verifier))
assert curated["dropped_by"].to_list() == [None, "verifier"], curated
"""


def test_a_users_task_curates_without_the_demo():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DEMO + USE_THE_CORE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_blocker_catches_a_demo_import():
    result = _import_blocked(["distill_assets.demo.verifiers"])
    assert result.returncode != 0 and "imported by a core module" in result.stderr
