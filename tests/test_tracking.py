"""MLflow tracking (``pmtrec_lab.tracking``): a real round trip through a temporary SQLite store,
read back with ``MlflowClient``; a grid's runs in one experiment; an unwritable store warns once
and changes no result; the command line does not import mlflow unless tracking is on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pmtrec_lab.compare import GridSpec, run_grid
from pmtrec_lab.compare.reproduce import without_seconds
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.tracking import ENV_URI, Tracking, flat_params, metric_key, tracked, tracking_from
from pmtrec_lab.train import train

mlflow = pytest.importorskip("mlflow")  # the tracking extra (requirements-tracking.txt)
from mlflow.tracking import MlflowClient  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SYN = {"num_users": 150, "num_items": 90, "interactions_per_user": 12}


def _cfg():
    return notebook_config(
        dataset="synthetic", loader_args=SYN, k_core=2, dim=8, epochs=2, lr=0.01, batch_size=256
    )


def _store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def _tracked_train(tracking: Tracking | None, out: Path):
    with tracked(tracking, out) as on_epoch:
        return train(_cfg(), out, on_epoch=on_epoch)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def untracked(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    train(_cfg(), out)
    return out


@pytest.mark.slow
def test_a_tracked_run_round_trips_through_a_sqlite_store(tmp_path, untracked):
    uri = _store(tmp_path)
    out = tmp_path / "run"
    _tracked_train(Tracking(uri, "single"), out)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("single")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["pmtrec.run_dir"] == str(out.resolve())

    # params: the resolved configuration, flattened
    config = (out / "config.yaml").read_text()
    import yaml

    expected = flat_params(yaml.safe_load(config))
    assert run.data.params == expected
    assert run.data.params["optim.lr"] == "0.01" and run.data.params["encoder.dim"] == "8"
    assert run.data.params["data.loader_args.num_users"] == "150"
    assert "method.name" in run.data.params

    # per-epoch histories (step = epoch, from 1) equal to history.json's
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    keys = [k for k in history[0] if k not in ("epoch", "seconds")]
    assert any(k.startswith("loss") for k in keys) and any(k.startswith("valid") for k in keys)
    for key in keys:
        assert _history(client, run.info.run_id, metric_key(key)) == [(r["epoch"], r[key]) for r in history]
    assert "seconds" not in run.data.metrics

    # final metrics: metrics.json's valid and test numbers
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        for name, value in metrics[split].items():
            assert run.data.metrics[metric_key(f"final/{split}/{name}")] == pytest.approx(value, abs=0)
    assert run.data.metrics["final/best_epoch"] == metrics["best_epoch"]

    # tracking changed no result
    for name in ("metrics.json", "history.json"):
        ours = without_seconds(json.loads((out / name).read_text()))
        assert ours == without_seconds(json.loads((untracked / name).read_text())), name

    # tracked again (the finished run met by a later --track): nothing is logged twice
    _tracked_train(Tracking(uri, "single"), out)
    assert len(client.search_runs([experiment.experiment_id])) == 1
    first = metric_key(keys[0])
    assert len(client.get_metric_history(run.info.run_id, first)) == 2
    assert len(client.get_metric_history(run.info.run_id, "final/best_epoch")) == 1


@pytest.mark.slow
def test_an_untracked_finished_run_is_logged_from_its_files(tmp_path, untracked):
    uri = _store(tmp_path)
    with tracked(Tracking(uri, "later"), untracked):
        pass
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("later").experiment_id])
    history = json.loads((untracked / "history.json").read_text())
    key = next(k for k in history[0] if k.startswith("valid"))
    assert _history(client, run.info.run_id, metric_key(key)) == [(r["epoch"], r[key]) for r in history]
    assert run.info.status == "FINISHED" and "final/test/ndcg_at_20" in run.data.metrics


@pytest.mark.slow
def test_a_compare_grid_of_two_runs_is_one_experiment_of_two_runs(tmp_path):
    uri = _store(tmp_path)
    out = tmp_path / "my-grid"
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["ew", "pcgrad"],
        seeds=[0],
        lrs=[0.01],
        base={
            "data": {"loader_args": SYN, "k_core": 2},
            "encoder": {"name": "mf", "dim": 8},
            "optim": {"epochs": 2, "batch_size": 256},
            "progress": "none",
        },
    )
    assert run_grid(spec, out, tracking=Tracking(uri, out.name)) == 2
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.name for e in client.search_experiments()]
    assert "my-grid" in experiments
    runs = client.search_runs([client.get_experiment_by_name("my-grid").experiment_id])
    assert len(runs) == 2
    assert sorted(r.data.params["method.name"] for r in runs) == ["ew", "pcgrad"]
    for r in runs:
        run_dir = Path(r.data.tags["pmtrec.run_dir"])
        assert run_dir.is_relative_to(out.resolve()) and (run_dir / "metrics.json").is_file()
        assert r.info.run_name.startswith("synthetic/")
        assert r.info.status == "FINISHED"
    assert run_grid(spec, out, tracking=Tracking(uri, out.name)) == 0  # resumed: nothing new
    assert len(client.search_runs([client.get_experiment_by_name("my-grid").experiment_id])) == 2


def _unwritable_store(tmp_path: Path, kind: str) -> str:
    """A SQLite store that cannot be created: under a read-only folder (not for root, whom the
    mode does not stop), or where a file stands in place of its folder (for everyone)."""
    if kind == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return f"sqlite:///{locked / 'sub' / 'mlflow.db'}"
    (tmp_path / "a-file").write_text("not a folder")
    return f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["read-only folder", "file in the way"])
def test_an_unwritable_store_warns_once_and_the_run_is_unchanged(tmp_path, untracked, caplog, kind):
    uri = _unwritable_store(tmp_path, kind)
    try:
        with caplog.at_level(logging.WARNING, logger="pmtrec_lab.tracking"):
            _tracked_train(Tracking(uri), tmp_path / "run")
            _tracked_train(Tracking(uri), tmp_path / "run2")  # the same store: no second warning
    finally:
        if (tmp_path / "locked").exists():
            (tmp_path / "locked").chmod(0o700)
    warnings = [r for r in caplog.records if r.name == "pmtrec_lab.tracking"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert uri in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    for name in ("metrics.json", "history.json"):
        ours = without_seconds(json.loads((tmp_path / "run" / name).read_text()))
        assert ours == without_seconds(json.loads((untracked / name).read_text())), name


def test_a_tuning_units_tracker_on_an_unwritable_store_warns_once_and_never_raises(tmp_path, caplog):
    """The study's side of ``tune --track`` (``tune.tracking.UnitTracker``): every event of a unit
    goes through the same guard as a training run's, so a broken store cannot stop a study."""
    from pmtrec_lab.tune.tracking import UnitTracker

    uri = _unwritable_store(tmp_path, "file in the way")
    tracker = UnitTracker(
        Tracking(uri, "tuned"),
        tmp_path / "ciao" / "ew",
        "ciao",
        "ew",
        {"trials": 2},
        config_of=lambda sample: {"optim": dict(sample)},
        replayed=lambda sample: False,
    )
    with caplog.at_level(logging.WARNING, logger="pmtrec_lab.tracking"):
        tracker.start()
        tracker.trial_started("t1", {"lr": 0.01})
        tracker.trial_result("t1", {"epoch": 1, "best_valid_ndcg20": 0.1}, "best_valid_ndcg20")
        tracker.trial_ended("t1", failed=False, stopped_early=True)
        tracker.unit_ended({"best_valid_ndcg@20": 0.1, "trial": 1})
    warnings = [r for r in caplog.records if r.name == "pmtrec_lab.tracking"]
    assert len(warnings) == 1 and uri in warnings[0].getMessage()
    assert tracker.parent_id is None and tracker.numbers == {"t1": 1}


def test_a_tuning_units_record_supersedes_retries_and_closes_open_trials(tmp_path):
    """``UnitTracker`` on a real SQLite store, driven as Tune's callbacks drive it: a retried
    trial's first attempt ends FAILED and a new child of the same number continues; a unit that
    stops closes its open trials KILLED; a resumed unit continues its parent, and one that starts
    over supersedes it."""
    from pmtrec_lab.tune.tracking import UnitTracker

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def unit(resuming: bool) -> UnitTracker:
        tracker = UnitTracker(
            Tracking(store, "tuned"),
            tmp_path / "ciao" / "ew",
            "ciao",
            "ew",
            {"trials": 2},
            config_of=lambda sample: {"optim": dict(sample)},
            replayed=lambda s: "_replay" in s,
            resuming=resuming,
        )
        tracker.start()
        return tracker

    first = unit(resuming=False)
    first.trial_started("t1", {"lr": 0.01})
    first.trial_result("t1", {"epoch": 1, "history": {"loss/rec": 0.7}, "s": 0.1}, "s")
    first.trial_retried("t1")  # the worker was lost: Ray starts t1 again from epoch 1
    first.trial_started("t1", {"lr": 0.01})
    first.trial_result("t1", {"epoch": 1, "history": {"loss/rec": 0.6}, "s": 0.2}, "s")
    first.trial_ended("t1", failed=False, stopped_early=False)
    first.trial_started("t2", {"lr": 0.02})
    first.unit_ended(None, status="KILLED")  # interrupted while t2 trains
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tuned").experiment_id

    def children(parent: str) -> list[tuple[str, str, str]]:
        runs = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
        return sorted(
            (r.data.tags["pmtrec.trial"], r.data.tags["pmtrec.attempt"], r.info.status) for r in runs
        )

    assert children(first.parent_id) == [("1", "1", "FAILED"), ("1", "2", "FINISHED"), ("2", "1", "KILLED")]
    assert client.get_run(first.parent_id).info.status == "KILLED"
    resumed = unit(resuming=True)
    assert resumed.parent_id == first.parent_id
    resumed.trial_started("r1", {"lr": 0.01, "_replay": 1})  # replayed: not logged again
    resumed.unit_ended({"best_valid_ndcg@20": 0.2, "trial": 1})
    assert len(children(first.parent_id)) == 3
    assert client.get_run(first.parent_id).info.status == "FINISHED"
    again = unit(resuming=False)  # best.yaml deleted, the unit tuned over
    assert again.parent_id != first.parent_id and children(again.parent_id) == []
    assert client.get_run(first.parent_id).data.tags["pmtrec.unit_key"].endswith("-superseded")


@pytest.mark.slow
def test_a_bad_uri_warns_once_and_the_run_finishes(tmp_path, untracked, caplog):
    uri = "nosuchscheme://nowhere"
    with caplog.at_level(logging.WARNING, logger="pmtrec_lab.tracking"):
        run = _tracked_train(Tracking(uri), tmp_path / "run")
    assert run.finished
    warnings = [r for r in caplog.records if r.name == "pmtrec_lab.tracking"]
    assert len(warnings) == 1 and uri in warnings[0].getMessage()
    assert run.metrics == json.loads((untracked / "metrics.json").read_text()) | {
        "seconds": run.metrics["seconds"]
    }


def test_tracking_is_opt_in_and_the_store_defaults_to_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_URI, raising=False)
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path))
    assert tracking_from(False, None) is None
    assert tracking_from(True, None).uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert tracking_from(False, "sqlite:///x.db").uri == "sqlite:///x.db"
    monkeypatch.setenv(ENV_URI, "sqlite:///env.db")
    assert tracking_from(False, None).uri == "sqlite:///env.db"
    assert tracking_from(True, "sqlite:///x.db").uri == "sqlite:///x.db"


def test_keys_and_params_take_mlflow_spellings():
    assert metric_key("valid/ndcg@20") == "valid/ndcg_at_20"
    assert metric_key("loss/social:trust") == "loss/social:trust"
    assert flat_params({"method": {"name": "pmtrec", "params": {"tau": 0.5}}, "eval": {"ks": [10, 20]}}) == {
        "method.name": "pmtrec",
        "method.params.tau": "0.5",
        "eval.ks": "[10, 20]",
    }
    assert flat_params({"tasks": {"include": None, "custom": []}, "x": {}}) == {
        "tasks.include": "null",
        "tasks.custom": "[]",
        "x": "{}",
    }


@pytest.mark.slow
def test_train_track_on_the_command_line_fills_the_store(tmp_path):
    """``pmtrec-lab train --track`` through the real entry point, with the store in a cache folder."""
    env = {**os.environ, "PMTREC_CACHE_DIR": str(tmp_path / "cache"), "DGLBACKEND": "pytorch"}
    env.pop(ENV_URI, None)
    sets = [
        "data.name=synthetic",
        "data.loader_args={num_users: 150, num_items: 90, interactions_per_user: 12}",
        "data.k_core=2",
        "encoder.dim=8",
        "optim.epochs=2",
        "optim.lr=0.01",
        "progress=none",
    ]
    cmd = [sys.executable, "-m", "pmtrec_lab.cli", "train", "--out", str(tmp_path / "run"), "--track"]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    db = tmp_path / "cache" / "mlflow" / "mlflow.db"
    assert db.is_file()
    assert not (tmp_path / "mlruns").exists()  # nothing in the working directory
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("pmtrec-lab train").experiment_id])
    assert run.data.tags["pmtrec.run_dir"] == str((tmp_path / "run").resolve())


def test_the_command_line_imports_mlflow_only_when_tracking(tmp_path):
    code = (
        "import sys\n"
        "from pmtrec_lab.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['compare', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert main(['methods', '--names']) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow')\n"
        "assert not loaded, loaded[:5]\n"
    )
    env = {"PYTHONPATH": str(REPO), "DGLBACKEND": "pytorch", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
