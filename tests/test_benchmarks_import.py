"""Every on-demand benchmark and eval still imports after a refactor (they are not run by the suite)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted(p.stem for p in (Path(__file__).parent / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_benchmarks_are_found():
    assert {"bench_loading", "eval_heatmaps", "fuzz_loader"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_imports_and_has_a_main(name):
    module = importlib.import_module(f"tests.benchmarks.{name}")
    assert callable(getattr(module, "main", None)), f"tests/benchmarks/{name}.py has no main()"
