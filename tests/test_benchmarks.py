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


def test_epoch_scaling_prints_every_optimizer_against_the_reference():
    out = _run(
        "benchmarks/epoch_scaling.py",
        "--sizes",
        "3000,6000",
        "--reference",
        "3000",
        "--steps",
        "2",
        "--graph-sizes",
        "3000",
        "--graph-steps",
        "1",
    )
    assert "sampling" in out and "lightgcn" in out and "hetero" in out and "vs ref" in out
    rows = [r for r in (line.split() for line in out.splitlines()) if len(r) == 12 and r[9].endswith("x")]
    assert [r[3] for r in rows] == ["adam", "sparse", "lazy_adam"] * 2
    assert [r[9] for r in rows[:3]] == ["1.00x"] * 3  # the reference against itself


def test_epinions_train_prints_both_methods_and_evaluation():
    out = _run(
        "benchmarks/epinions_train.py",
        "--users", "300", "--items", "400", "--per-user", "12", "--trust-per-user", "3", "--steps", "1",
    )
    assert out.count("pmtrec") == 2 and out.count("evaluation (validation") == 2


@pytest.mark.realdata
def test_dgl_propagation_prints_every_path():
    out = _run("benchmarks/dgl_propagation.py", "--dataset", "ml-100k", "--threads", "1", "--repeats", "1")
    for name in ("update_all", "u_mul_e_sum", "encoder dgl", "encoder sparse"):
        assert name in out
    assert out.count("fwd+bwd") == 2


def test_gpu_check_refuses_a_missing_data_dir(tmp_path):
    res = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(tmp_path / "absent"), str(tmp_path / "out"), "--cpu"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert res.returncode == 2 and "DATA_DIR" in res.stderr and not (tmp_path / "out").exists()


def test_eval_time_prints_the_ratio():
    out = _run(
        "benchmarks/eval_time.py", "--users", "300", "--items", "500", "--repeats", "1", "--skip-memory"
    )
    assert "ratio" in out.lower()


@pytest.mark.realdata
def test_adam_pressure_prints_both_sides_and_the_ratio():
    out = _run("benchmarks/adam_pressure.py", "--datasets", "ml-100k", "--at", "1,3")
    rows = [line.split() for line in out.splitlines() if line.startswith("ml-100k")]
    assert {(r[1], r[2]) for r in rows} == {("1", "user"), ("1", "item"), ("3", "user"), ("3", "item")}
    for r in rows:
        single, ew, ratio = float(r[3]), float(r[4]), float(r[5])
        assert single > 0 and ew > 0 and ratio == pytest.approx(ew / single, rel=2e-3)
        assert 0.0 <= float(r[7]) <= 1.0  # the share of rows with an auxiliary gradient


def test_executors_prints_the_table():
    # sequential only (Ray's start alone is about 20 s here): one method, one seed
    out = _run(
        "benchmarks/executors.py", "--executors", "sequential", "--set", "methods=[ew]", "--set", "seeds=[0]"
    )
    assert "| sequential" in out and "test metrics identical to sequential for every run: yes" in out


@pytest.mark.realdata
def test_step_time_v3_times_every_piece_with_its_meta_work():
    out = _run(
        "benchmarks/step_time.py", "--dataset", "ml-100k", "--steps", "2", "--encoders", "mf",
        "--methods", "none", "--v3",
    )  # fmt: skip
    from benchmarks.step_time import V3_VARIANTS

    for label in V3_VARIANTS:
        row = next(line for line in out.splitlines() if line.strip().startswith(label))
        assert row.rstrip().endswith("x") and float(row.split()[-1].rstrip("x")) > 0
