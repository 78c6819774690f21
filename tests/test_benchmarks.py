"""The benchmark scripts stay runnable: each imports against the current package, and the
Pile-scale schedule benchmark runs end to end at a tiny size (its figures are not judged here;
docs/benchmarks.md records real runs)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_benchmark_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module(name)


@pytest.mark.slow  # builds Pythia's 147 M-sample schedule over a small dataset: ~1 min
def test_schedule_benchmark_runs_small(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(BENCH / "schedule.py"), "--docs", "3000",
                          "--tokens", "400000000", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "batch-at: open + step 3000" in run.stdout
