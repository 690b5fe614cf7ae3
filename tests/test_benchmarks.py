"""The benchmark scripts run end to end on small settings (they print ratios; no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.realdata
def test_step_time_prints_phases_and_ratios():
    out = _run(
        "benchmarks/step_time.py",
        "--dataset",
        "ml-100k",
        "--steps",
        "2",
        "--encoders",
        "mf",
        "--methods",
        "ew,pmtrec,pcgrad",
    )
    assert "plain EW step" in out and "phases (ms): sampling=" in out
    pcgrad = next(line for line in out.splitlines() if line.strip().startswith("pcgrad"))
    assert pcgrad.count("x") == 2  # step ratio and the K-backward form


def test_epoch_scaling_prints_dense_and_sparse_rows():
    out = _run(
        "benchmarks/epoch_scaling.py",
        "--sizes",
        "3000,6000",
        "--graph-sizes",
        "3000",
        "--graph-steps",
        "1",
        "--sparse",
    )
    assert "sampling" in out and "lightgcn" in out and "hetero" in out
    assert "sparse" in out


def test_eval_time_prints_the_ratio():
    out = _run(
        "benchmarks/eval_time.py", "--users", "300", "--items", "500", "--repeats", "1", "--skip-memory"
    )
    assert "ratio" in out.lower()


def test_executors_prints_the_table():
    # sequential only (Ray's start alone is about 20 s here): one method, one seed
    out = _run(
        "benchmarks/executors.py", "--executors", "sequential", "--set", "methods=[ew]", "--set", "seeds=[0]"
    )
    assert "| sequential" in out and "test metrics identical to sequential for every run: yes" in out
