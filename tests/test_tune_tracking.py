"""``pmtrec-lab tune --track`` (issue "What a multi-task recommender researcher expects"): every
tuning unit and trial in a local MLflow store, on a local Ray instance (the default of ``tune``
without ``--address``), checked against the study's own ``trials.csv`` and ``best.yaml``. Each
``tune`` command runs in a fresh process, as a user runs it: a local Ray instance started inside
the test session after others were started and stopped there can fail to start its GCS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.ray]

GRID = {
    "datasets": ["synthetic"],
    "methods": ["ew"],
    "seeds": [0],
    "lrs": [0.01],
    "base": {
        "data": {"loader_args": {"num_users": 150, "num_items": 90}},
        "encoder": {"name": "mf", "dim": 16},
        "optim": {"epochs": 2, "batch_size": 512},
        "progress": "none",
    },
}


def _tune_args(tmp_path: Path, out: Path) -> list[str]:
    """A tiny tuning unit (synthetic, EW, 4 trials x at most 3 epochs, ASHA from epoch 1)."""
    grid = tmp_path / "grid.yaml"
    if not grid.is_file():
        grid.write_text(yaml.safe_dump(GRID, sort_keys=False))
        spaces = tmp_path / "spaces"
        spaces.mkdir()
        (spaces / "ew.yaml").write_text(
            "optim.lr: {loguniform: [1.0e-4, 5.0e-2]}\noptim.weight_decay: {choice: [0.0, 1.0e-4]}\n"
        )
    args = ["tune", "--grid", str(grid), "--spaces", str(tmp_path / "spaces"), "--out", str(out)]
    return [*args, "--trials", "4", "--max-epochs", "3", "--grace-period", "1"]


def _tune(args: list[str], **env: str) -> int:
    """``pmtrec-lab tune ARGS`` in a fresh process (a short temporary folder: Ray's socket paths
    under it must stay within AF_UNIX's 107 bytes); its exit code."""
    tmp = tempfile.mkdtemp(prefix="tt-", dir="/tmp")
    try:
        full = {**os.environ, "TMPDIR": tmp, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
        code = "import sys; from pmtrec_lab.cli import main; sys.exit(main(sys.argv[1:]))"
        done = subprocess.run([sys.executable, "-c", code, *args], env=full, timeout=600, cwd=REPO)
        return done.returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_tune_track_logs_each_unit_and_trial_and_changes_no_result(tmp_path):
    """``tune --track``: one parent MLflow run per unit and one child run per trial with its
    resolved parameters and per-epoch history, ASHA's cuts tagged, every run closed. Interrupted
    after 2 trials and resumed, the unit keeps one parent, the replayed trials are not logged
    twice, and trials.csv and best.yaml equal those of an untracked unit."""
    from mlflow.tracking import MlflowClient

    from pmtrec_lab.tune.resume import STOP_AFTER_ENV

    whole, tracked = tmp_path / "whole", tmp_path / "tracked"
    assert _tune(_tune_args(tmp_path, whole)) == 0
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    track = ["--tracking-uri", store]
    assert _tune([*_tune_args(tmp_path, tracked), *track], **{STOP_AFTER_ENV: "2"}) == 2
    assert _tune([*_tune_args(tmp_path, tracked), *track]) == 0
    a, b = (pd.read_csv(o / "synthetic" / "ew" / "trials.csv") for o in (whole, tracked))
    pd.testing.assert_frame_equal(a.drop(columns="trial_id"), b.drop(columns="trial_id"))
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pmtrec.kind") == "tuning unit"]
    assert len(parents) == 1 and parents[0].info.run_name == "synthetic/ew"
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["budget.trials"] == "4"
    best = yaml.safe_load((tracked / "synthetic" / "ew" / "best.yaml").read_text())
    assert parent.data.metrics["best_valid_ndcg_at_20"] == pytest.approx(best["best_valid_ndcg@20"])
    assert parent.data.tags["pmtrec.best_trial"] == str(best["trial"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = {int(r.data.tags["pmtrec.trial"]): r for r in children if r.info.status == "FINISHED"}
    assert sorted(finished) == [1, 2, 3, 4]
    assert all(r.info.status == "KILLED" for r in children if r not in finished.values())
    for _, row in b.iterrows():
        run = finished[int(row["trial"])]
        assert float(run.data.params["optim.lr"]) == pytest.approx(row["optim.lr"], rel=1e-12)
        assert run.data.params["method.name"] == "ew" and run.data.params["data.name"] == "synthetic"
        assert run.data.tags["pmtrec.stopped_early"] == str(bool(row["stopped_early"])).lower()
        history = client.get_metric_history(run.info.run_id, "valid/ndcg_at_20")
        assert [m.step for m in history] == list(range(1, int(row["epochs_run"]) + 1))
        score = client.get_metric_history(run.info.run_id, "tune/best_valid_ndcg_at_20")
        assert max(m.value for m in score) == pytest.approx(row["best_valid_ndcg@20"])
        assert len(client.get_metric_history(run.info.run_id, "loss/rec")) == len(history)
