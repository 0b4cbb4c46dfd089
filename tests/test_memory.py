"""An attack job's peak memory does not grow with the training set (scaled down).

Two prepared datasets with the same number of held-out slices, the second with more than
ten times the training slices. The attack-style job of benchmarks/memory.py (open a fold,
copy its held-out slices, forward pass, scoring) runs in a fresh subprocess on each, and
its peak resident memory (VmHWM, see the benchmark's docstring for why not getrusage) is compared. A job that reads every slice, as one did
when the prepared data was one file, shows the growth: that proves the measurement sees it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a 10,100-slice dataset under a memory limit

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "memory.py"
SIZE = 48  # 7 bytes a pixel: the larger dataset holds 10100 slices, 163 MB


def load_benchmark():
    spec = importlib.util.spec_from_file_location("memory_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_rss_mb(scenario: str, directory: Path) -> float:
    """Peak RSS the job adds once its imports and model are loaded (those vary from run to run)."""
    result = subprocess.run([sys.executable, str(BENCHMARK), "--measure", scenario, "--dir", str(directory),
                             "--model", "tiny", "--batch-size", "16"],
                            capture_output=True, text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    return row["max_rss_mb"] - row["before_data_mb"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    benchmark = load_benchmark()
    root = tmp_path_factory.mktemp("memory")
    # groups of 100 slices; one group per fold is held out: 100 held-out slices in both
    small = benchmark.generate(root / "small", slices=1100, size=SIZE, folds=11)
    large = benchmark.generate(root / "large", slices=10100, size=SIZE, folds=101)
    return root / "small", small, root / "large", large


def test_attack_job_memory_does_not_grow_with_the_training_slices(datasets):
    small_dir, small, large_dir, large = datasets
    small_sizes, large_sizes = small["fold_splits"]["0"], large["fold_splits"]["0"]
    assert small_sizes["val"] == large_sizes["val"] == 100
    assert large_sizes["train"] >= 10 * small_sizes["train"]
    growth_of_data_mb = (large["n_slices"] - small["n_slices"]) * SIZE * SIZE * 7 / 2 ** 20  # about 150 MB
    attack_small, attack_large = data_rss_mb("attack", small_dir), data_rss_mb("attack", large_dir)
    assert attack_large - attack_small < 15, (attack_small, attack_large)
    # the control: reading every slice grows with the data, and the measurement shows it
    load_small, load_large = data_rss_mb("load-all", small_dir), data_rss_mb("load-all", large_dir)
    assert load_large - load_small > 0.5 * growth_of_data_mb, (load_small, load_large)
