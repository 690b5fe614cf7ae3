"""A run's results are never reused on data that changed since it trained (issue "Results you can
trust", item 1). The data fingerprint identifies the data (the source files' contents and the
settings that change the split), not the cache format: every committed v3-grid run's recorded
fingerprint is recognised from ``../shared/datasets`` today, and the fingerprint does not move
when the cache format or the preprocessing version does.

Each entry point that could reuse a finished run is tried on a folder dataset whose interaction
file lost one line after the run finished: ``evaluate`` refuses naming both fingerprints unless
``--allow-changed-data``; ``train`` into the same folder refuses instead of returning the old
metrics; the run cache (notebooks, reports) trains a new run instead of bringing the old back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmtrec_lab.cli import main
from pmtrec_lab.config import load_config, load_run_config
from pmtrec_lab.data.export import export_dataset
from pmtrec_lab.data.loading import identity_for_config
from pmtrec_lab.train import cached_run, train
from pmtrec_lab.train.cache import run_dir_for

GRID_V3 = Path(__file__).resolve().parents[1] / "results" / "grid-v3" / "runs"
SMALL = {"num_users": 60, "num_items": 40}


@pytest.fixture
def folder_run(tmp_path, monkeypatch):
    """A finished run on a folder dataset, and a function that drops one line of its data."""
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))
    data = export_dataset("synthetic", tmp_path / "syn", loader_args=SMALL)
    cfg = load_config(
        overrides=[
            "data.name=atomic",
            f"data.path={data}",
            "encoder.dim=8",
            "optim.epochs=2",
            "optim.batch_size=256",
            "progress=none",
        ]
    )
    out = tmp_path / "run"
    train(cfg, out)

    def change_data() -> None:
        inter = data / "syn.inter"
        lines = inter.read_text().splitlines(keepends=True)
        inter.write_text("".join(lines[:-1]))

    return cfg, out, change_data


def _fingerprint(out: Path) -> str:
    return json.loads((out / "status.json").read_text())["data_fingerprint"]


def test_evaluate_refuses_changed_data_unless_allowed(folder_run, capsys):
    cfg, out, change_data = folder_run
    assert main(["evaluate", str(out)]) == 0  # unchanged data: evaluates
    before = _fingerprint(out)
    change_data()
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    now = identity_for_config(cfg.data).fingerprint
    assert before in err and now in err and before != now and "--allow-changed-data" in err
    assert main(["evaluate", str(out), "--allow-changed-data"]) == 0


def test_train_into_the_same_folder_refuses_instead_of_returning_old_metrics(folder_run, capsys, tmp_path):
    cfg, out, change_data = folder_run
    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml())
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0  # same data: returned
    change_data()
    metrics = (out / "metrics.json").read_text()
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "finished on other data" in err and _fingerprint(out) in err and "--restart" in err
    assert (out / "metrics.json").read_text() == metrics  # nothing written over
    assert main(["train", "--config", str(config), "--out", str(out), "--restart"]) == 0
    assert _fingerprint(out) == identity_for_config(cfg.data).fingerprint


def test_the_run_cache_trains_anew_on_changed_data(folder_run, tmp_path):
    cfg, _, change_data = folder_run
    first = cached_run(cfg, tmp_path / "runs")
    assert cached_run(cfg, tmp_path / "runs").path == first.path  # reused while unchanged
    change_data()
    second = cached_run(cfg, tmp_path / "runs")
    assert second.path != first.path and second.path == run_dir_for(cfg, tmp_path / "runs")
    assert _fingerprint(second.path) != _fingerprint(first.path)


def test_the_fingerprint_ignores_the_cache_format_and_preprocessing_version(monkeypatch):
    from pmtrec_lab.data import cache, loading

    cfg = load_config(overrides=["data.name=synthetic"])
    before = identity_for_config(cfg.data)
    monkeypatch.setattr(loading, "PREPROCESS_VERSION", loading.PREPROCESS_VERSION + 1)
    monkeypatch.setattr(loading, "CACHE_FORMAT", cache.CACHE_FORMAT + 1)
    after = identity_for_config(cfg.data)
    assert after.fingerprint == before.fingerprint and after.cache_key != before.cache_key
    assert after.matches(before.cache_key)  # a run that recorded the old kind is still recognised
    meta = identity_for_config(load_config(overrides=["data.name=synthetic", "data.meta_split=true"]).data)
    assert meta.fingerprint != before.fingerprint  # a setting that changes the split enters


@pytest.mark.realdata
def test_every_committed_v3_grid_run_is_recognised_from_the_shared_datasets(shared_datasets):
    by_data: dict[str, list[tuple[Path, str]]] = {}
    for status in sorted(GRID_V3.glob("*/*/*/status.json")):
        cfg = load_run_config(status.parent / "config.yaml", [f"data.data_dir={shared_datasets}"])
        key = cfg.data.model_dump_json()
        recorded = json.loads(status.read_text())["data_fingerprint"]
        by_data.setdefault(key, []).append((status.parent, recorded))
    assert len(by_data) == 4 and sum(len(v) for v in by_data.values()) == 416
    for runs in by_data.values():
        cfg = load_run_config(runs[0][0] / "config.yaml", [f"data.data_dir={shared_datasets}"])
        identity = identity_for_config(cfg.data)
        stale = [str(run) for run, recorded in runs if not (recorded and identity.matches(recorded))]
        assert not stale, stale[:3]


@pytest.mark.parametrize("form", ["flag", "set", "flag-after-set"])
def test_train_takes_data_dir_as_every_other_command(tmp_path, monkeypatch, capsys, form):
    """``train --data-dir`` (issue "Results you can trust": every command that reads a dataset takes
    it) is the same as ``--set data.data_dir=...``; given both, the flag wins. A folder without
    the dataset is named in the error, so the flag is seen to reach the loader."""
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))
    empty = tmp_path / "no-datasets-here"
    empty.mkdir()
    args = {
        "flag": ["--data-dir", str(empty)],
        "set": ["--set", f"data.data_dir={empty}"],
        "flag-after-set": ["--set", "data.data_dir=/elsewhere", "--data-dir", str(empty)],
    }[form]
    rc = main(["train", "--set", "data.name=lastfm", *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and str(empty) in err and "/elsewhere" not in err
