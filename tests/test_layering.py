"""The layers: the plain core -> the Dagster layer -> the command line, no upward import and no circle.

Every import counts, function-level and TYPE_CHECKING ones included: a circle through a
function-level import is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("distill_assets", "resources")

# Lowest first. A module may import modules of its own layer or of a lower one. A name ending in
# ".*" stands for a package's submodules.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "core",  # plain functions and engines: no Dagster
        [
            "distill_assets", "distill_assets.specbase", "distill_assets.spec", "distill_assets.keys",
            "distill_assets.padding", "distill_assets.gguf", "distill_assets.envrefs", "distill_assets.inputs",
            "distill_assets.generation", "distill_assets.frames",
            "distill_assets.curation",
            "distill_assets.quality", "distill_assets.verifiers", "distill_assets.routing", "distill_assets.training",
            "distill_assets.training_set", "distill_assets.methods", "distill_assets.methods.*",
            "distill_assets.methods.local_teacher", "distill_assets.methods.hidden_states",
            "distill_assets.methods.hidden_states_trainer",
            "distill_assets.evaluation", "distill_assets.metrics", "distill_assets.metrics.*", "distill_assets.plugins",
            "distill_assets.intervals",
            "distill_assets.report", "distill_assets.plots",
            "distill_assets.tables", "distill_assets.versions", "distill_assets.template_check",
            "resources", "resources.backends", "resources.cached_backend", "resources.generation_cache",
            "resources.completion_codec", "resources.checkpoint_store", "resources.cache_writer",
            "resources.postgres_cache",
            "resources.http_backend", "resources.retry", "resources.teachers", "resources.transformers_backend",
            "resources.vllm_backend", "resources.devices",
        ],
    ),
    (
        "dagster",  # resources, partitions, teacher staleness, Pipes and Kubernetes glue
        [
            "resources.accelerator", "resources.storage", "distill_assets.partitions", "distill_assets.staleness",
            "distill_assets.k8s_deploy", "distill_assets.pipes_generation", "distill_assets.pipes_training",
        ],
    ),
    ("assets", ["distill_assets.assets", "distill_assets.assets.*"]),  # assets, checks, sensors
    ("definitions", ["distill_assets.definitions"]),
    (
        "command line",  # and the programs a pod runs, and the demo, a plug-in the core never imports
        [
            "distill_assets.execution", "distill_assets.run", "distill_assets.backfill",
            "distill_assets.generate_entrypoint", "distill_assets.train_entrypoint", "distill_assets.serve",
            "distill_assets.demo", "distill_assets.demo.*",
        ],
    ),
]  # fmt: skip
CORE = [m for m in LAYERS[0][1] if not m.endswith("*")]


def project_modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".*") and module.startswith(member[:-1])):
                return index
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {n} ({LAYERS[layer_of(n)][0]})"
        for m, targets in sorted(graph.items())
        for n in sorted(targets)
        if layer_of(n) > layer_of(m)
    ]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_every_module_has_a_layer(graph):
    assert [m for m in sorted(graph) if layer_of(m) is None] == []


def test_no_module_imports_a_higher_layer(graph):
    assert upward_imports(graph) == []


def test_no_import_circles(graph):
    assert circles(graph) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    graph = {
        "distill_assets.spec": {"distill_assets.run"},  # core -> command line
        "distill_assets.run": {"distill_assets.backfill"},
        "distill_assets.backfill": {"distill_assets.run"},  # a circle within one layer
    }
    assert upward_imports(graph) == [
        "distill_assets.spec (core) imports distill_assets.run (command line)"
    ]  # fmt: skip
    assert circles(graph) == [["distill_assets.backfill", "distill_assets.run"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]


BLOCK = """
import importlib.abc, sys
blocked = sys.argv[1]
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == blocked or name.startswith(blocked + "."):
            raise ImportError(f"{name} imported by a core module")
sys.meta_path.insert(0, Block())
import importlib
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def import_blocking(blocked: str, modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK, blocked, *modules], cwd=ROOT, capture_output=True, text=True, timeout=180
    )


def test_core_modules_import_without_dagster():
    result = import_blocking("dagster", [*CORE, "bench.methods_seeds"])
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_blocker_catches_a_dagster_import():
    result = import_blocking("dagster", ["distill_assets.partitions"])
    assert result.returncode != 0 and "imported by a core module" in result.stderr
