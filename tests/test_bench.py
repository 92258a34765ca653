"""`make bench` runs every benchmark: a script in bench/ with a `main` that the target leaves out fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench_recipe() -> str:
    """The recipe of the Makefile's `bench` target: its tab-indented lines, continuations joined."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("bench:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return "\n".join(recipe)


def benchmarks() -> set[str]:
    """The modules of bench/ that define a top-level `main`: the benchmarks."""
    out = set()
    for path in (ROOT / "bench").glob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            out.add(f"bench.{path.stem}")
    return out


def test_make_bench_runs_every_benchmark():
    run = set(re.findall(r"-m (bench\.\w+)", bench_recipe()))
    assert benchmarks(), "no benchmark found in bench/"
    assert not benchmarks() - run, f"the Makefile's bench target leaves out {sorted(benchmarks() - run)}"
    assert not run - benchmarks(), f"the bench target runs what is not a benchmark: {sorted(run - benchmarks())}"
