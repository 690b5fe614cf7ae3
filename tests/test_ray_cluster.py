"""The Ray executor and ``pmtrec-lab tune`` on a two-node Ray cluster on this machine (issue 10):
the same metrics as the sequential executor through ``compare --address``, a run that raises
recorded failed while the others finish, a run that kills its own worker retried to completion,
every Ray process on loopback, and a seeded TPE + ASHA study whose ``best.yaml`` ``compare
--tuned`` runs. The cluster is started once for the module and stopped even when a test fails,
with nothing left running (``tests/ray_cluster.py``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from pmtrec_lab.cli import main
from pmtrec_lab.compare import GridSpec, grid_progress, run_grid, run_path
from pmtrec_lab.compare.remote import CRASH_ONCE_ENV
from pmtrec_lab.train import load_run
from tests.ray_cluster import RayCluster, is_loopback_ip, listening_sockets

pytestmark = [pytest.mark.slow, pytest.mark.ray]

BASE = {
    "data": {"loader_args": {"num_users": 150, "num_items": 90}},
    "encoder": {"name": "mf", "dim": 16},
    "optim": {"epochs": 2, "batch_size": 512},
    "progress": "none",
}
GRID = {
    "datasets": ["synthetic"],
    "methods": ["ew", "pcgrad", "broken"],
    "seeds": [0, 1],
    "lrs": [0.01],
    "base": BASE,
    # valid when the grid loads; raises at the first step (the task is not among the run's)
    "variants": {"broken": {"name": "static-lambda", "params": {"task_weights": {"no-such-task": 0.5}}}},
}


@pytest.fixture(scope="module")
def cluster():
    # a short root: Ray's unix socket paths under --temp-dir must stay below 108 bytes
    c = RayCluster(Path(tempfile.mkdtemp(prefix="pmray-", dir="/tmp")))
    try:
        c.start()
        with pytest.MonkeyPatch.context() as mp:
            for k, v in c.env().items():
                mp.setenv(k, v)
            yield c
    finally:
        left = c.stop()
        shutil.rmtree(c.root, ignore_errors=True)
        assert not left, f"Ray processes still running after the cluster stopped: {left}"


@pytest.fixture(scope="module")
def ray_grid(cluster, tmp_path_factory):
    """The grid through ``compare --address``: pcgrad's runs kill their worker once each."""
    root = tmp_path_factory.mktemp("ray-grid")
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID, sort_keys=False))
    out = root / "out"
    os.environ[CRASH_ONCE_ENV] = "pcgrad"
    try:
        rc = main(["compare", "--grid", str(grid), "--out", str(out), "--address", cluster.address])
    finally:
        del os.environ[CRASH_ONCE_ENV]
    return GridSpec.model_validate(GRID), out, rc


def test_cluster_grid_matches_the_sequential_executor(ray_grid, tmp_path):
    spec, out, _ = ray_grid
    good = spec.model_copy(update={"methods": ["ew", "pcgrad"], "variants": {}})
    assert run_grid(good, tmp_path / "seq", executor="sequential") == 4
    for method in good.methods:
        for seed in good.seeds:
            remote = load_run(run_path(out, spec, "synthetic", method, 0.01, seed))
            local = load_run(run_path(tmp_path / "seq", good, "synthetic", method, 0.01, seed))
            assert remote.finished and remote.metrics["test"] == local.metrics["test"]
            assert remote.metrics["valid"] == local.metrics["valid"]
            pd.testing.assert_frame_equal(remote.per_user, local.per_user)
            rd = run_path(out, spec, "synthetic", method, 0.01, seed)
            assert (rd / "best.pt").is_file() and not (rd / "last.pt").exists()  # what a resume needs only
    assert (out / "summary.md").is_file()


def test_a_run_that_raises_is_recorded_failed_and_the_others_finish(ray_grid, capsys):
    spec, out, rc = ray_grid
    assert rc == 2  # the command exits non-zero: a run failed
    prog = grid_progress(out, spec).set_index("method")
    assert prog.loc["broken", "failed"].startswith("lr0.01-seed0: ")
    assert "no-such-task" in prog.loc["broken", "failed"]
    assert prog.loc["broken", "pending"] == "lr0.01-seed0 lr?-seed1"  # seed 1 waits for seed 0
    assert (prog.loc[["ew", "pcgrad"], "done"] == 2).all() and (
        prog.loc[["ew", "pcgrad"], "failed"] == ""
    ).all()
    assert "Failed on synthetic: broken: lr0.01-seed0" in (out / "summary.md").read_text()
    status = load_run(run_path(out, spec, "synthetic", "broken", 0.01, 0)).status
    assert status["state"] == "failed" and "no-such-task" in status["error"]


def test_a_run_that_kills_its_worker_is_retried_and_completes(ray_grid):
    spec, out, _ = ray_grid
    for seed in spec.seeds:  # each pcgrad run killed its worker on its first attempt
        run = load_run(run_path(out, spec, "synthetic", "pcgrad", 0.01, seed))
        assert run.finished and run.metrics["epochs_run"] == 2


def test_every_ray_process_listens_on_loopback_only(cluster, ray_grid):
    """Every listening socket of the cluster's processes (GCS, raylets, object managers, agents,
    autoscaler monitor, workers), after the grid ran, is on 127.0.0.1 (loopback mode,
    ``pmtrec_lab/ray_connect.py``); the gRPC servers' show as ``::ffff:127.0.0.1``."""
    procs = cluster.processes()
    assert len(procs) >= 6  # gcs, raylets, agents, workers
    sockets = listening_sockets({p.pid for p in procs})
    assert len(sockets) >= 5, sockets
    bad = [s for s in sockets if not is_loopback_ip(s[1])]
    assert not bad, f"Ray processes listening beyond loopback (pid, address, port, kind): {bad}"


def test_tune_with_seeded_tpe_and_asha_then_compare_tuned(cluster, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({**GRID, "methods": ["ew"], "variants": {}}, sort_keys=False))
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "ew.yaml").write_text(
        "optim.lr: {loguniform: [1.0e-4, 5.0e-2]}\noptim.weight_decay: {choice: [0.0]}\n"
    )
    out = tmp_path / "tuned"
    args = ["tune", "--grid", str(grid), "--spaces", str(spaces), "--trials", "4", "--max-epochs", "4"]
    args += ["--grace-period", "1"]  # small data: let ASHA cut (the default waits 10 epochs)
    assert main([*args, "--out", str(out), "--address", cluster.address]) == 0
    trials = pd.read_csv(out / "synthetic" / "ew" / "trials.csv")
    assert trials["trial"].tolist() == [1, 2, 3, 4]
    assert {
        "trial_id",
        "optim.lr",
        "optim.weight_decay",
        "epochs_run",
        "best_valid_ndcg@20",
        "stopped_early",
    } <= set(trials.columns)
    assert trials["stopped_early"].any() and (trials.loc[trials["stopped_early"], "epochs_run"] < 4).all()
    assert (trials["epochs_run"] <= 4).all()
    best = yaml.safe_load((out / "synthetic" / "ew" / "best.yaml").read_text())
    top = trials.loc[trials["best_valid_ndcg@20"].idxmax()]
    assert best["trial"] == top["trial"] and best["lr"] == pytest.approx(top["optim.lr"], rel=1e-12)
    assert best["best_valid_ndcg@20"] == pytest.approx(top["best_valid_ndcg@20"])
    assert best["budget"]["trials"] == 4 and best["budget"]["max_epochs"] == 4
    study = yaml.safe_load((out / "study.yaml").read_text())
    assert study["budget"]["epochs_budget"] == 16
    # compare --tuned runs every seed at the tuned configuration (sequentially here)
    runs = tmp_path / "grid-tuned"
    assert main(["compare", "--grid", str(grid), "--tuned", str(out), "--out", str(runs)]) == 0
    folders = sorted(p.name for p in (runs / "runs" / "synthetic" / "ew").iterdir())
    assert len(folders) == 2 and all(f.startswith(f"lr{best['lr']:g}-seed") for f in folders)
    run = load_run(runs / "runs" / "synthetic" / "ew" / folders[0])
    assert run.config.optim.lr == best["lr"] and run.config.optim.weight_decay == best["weight_decay"]
    assert (
        yaml.safe_load((runs / "grid.resolved.yaml").read_text())["tuned"]["synthetic"]["ew"]["lr"]
        == best["lr"]
    )


def _tune_args(tmp_path: Path, cluster, out: Path) -> list[str]:
    """A tiny tuning unit (synthetic, EW, 4 trials x at most 3 epochs, ASHA from epoch 1)."""
    grid = tmp_path / "grid.yaml"
    if not grid.is_file():
        grid.write_text(yaml.safe_dump({**GRID, "methods": ["ew"], "variants": {}}, sort_keys=False))
        spaces = tmp_path / "spaces"
        spaces.mkdir()
        (spaces / "ew.yaml").write_text(
            "optim.lr: {loguniform: [1.0e-4, 5.0e-2]}\noptim.weight_decay: {choice: [0.0, 1.0e-4]}\n"
        )
    args = ["tune", "--grid", str(grid), "--spaces", str(tmp_path / "spaces"), "--out", str(out)]
    return [*args, "--trials", "4", "--max-epochs", "3", "--grace-period", "1", "--address", cluster.address]


def test_an_interrupted_tune_unit_resumes_by_replaying_its_finished_trials(cluster, tmp_path, capsys):
    """Stopped after 2 finished trials (the test switch), then rerun: the recorded trials are
    replayed, the others trained, and trials.csv and best.yaml equal an uninterrupted unit's but
    for Ray's trial ids and the timing. A record that the sampler does not reproduce is refused."""
    from pmtrec_lab.tune.resume import PARTIAL_FILE, STOP_AFTER_ENV

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(_tune_args(tmp_path, cluster, whole)) == 0
    assert not (whole / "synthetic" / "ew" / PARTIAL_FILE).exists()
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STOP_AFTER_ENV, "2")
        assert main(_tune_args(tmp_path, cluster, resumed)) == 2
    partial = resumed / "synthetic" / "ew" / PARTIAL_FILE
    err = capsys.readouterr().err.strip().splitlines()[-1]  # Ray logs to stderr too
    assert err.startswith("error: tune synthetic ew: the study ended after 2 of 4") and str(partial) in err
    assert len(partial.read_text().splitlines()) == 2 and not (partial.parent / "best.yaml").exists()
    assert main(_tune_args(tmp_path, cluster, resumed)) == 0
    assert "replaying 2 finished trials" in capsys.readouterr().out and not partial.exists()
    a, b = (pd.read_csv(o / "synthetic" / "ew" / "trials.csv") for o in (whole, resumed))
    assert a["trial_id"].nunique() == 4 and a["stopped_early"].any()  # ASHA cut: the replay must match
    pd.testing.assert_frame_equal(a.drop(columns="trial_id"), b.drop(columns="trial_id"))
    best_a, best_b = (yaml.safe_load((o / "synthetic/ew/best.yaml").read_text()) for o in (whole, resumed))
    for best in (best_a, best_b):
        del best["trial_id"], best["seconds"]
    assert best_a == best_b
    # a record the seeded sampler does not propose (another space, another code) is refused
    bad = tmp_path / "bad"
    line = {"trial": 1, "config": {"optim.lr": 0.5}, "reports": [], "stopped_early": False}
    (bad / "synthetic" / "ew").mkdir(parents=True)
    (bad / "synthetic" / "ew" / PARTIAL_FILE).write_text(json.dumps(line) + "\n")
    capsys.readouterr()
    assert main(_tune_args(tmp_path, cluster, bad)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {bad / 'synthetic' / 'ew' / PARTIAL_FILE}: trial 1") and "delete" in err
    assert not (bad / "synthetic" / "ew" / "best.yaml").exists()


def test_compare_tuned_needs_every_best_yaml(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({**GRID, "methods": ["ew"], "variants": {}}, sort_keys=False))
    rc = main(
        ["compare", "--grid", str(grid), "--tuned", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "synthetic/ew/best.yaml not found" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_local_default_instance_listens_on_loopback_only(cluster):
    """Without --address a local Ray instance starts (``ray.init(_node_ip_address="127.0.0.1")`` in
    loopback mode): its processes, and this driver, listen on loopback only. Runs last: one Ray
    per process at a time (it uses the cluster's token from the environment)."""
    from pmtrec_lab.compare import RayExecutor

    with RayExecutor(object_store_memory=100 * 1024 * 1024) as ex:
        assert ex.submit(abs, -3).result(timeout=120) == 3
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        sockets = listening_sockets(pids)
    assert len(sockets) >= 3, sockets
    bad = [s for s in sockets if not is_loopback_ip(s[1])]
    assert not bad, f"local Ray listening beyond loopback: {bad}"
