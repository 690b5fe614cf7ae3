"""The defaults switched on once the verdict grids were committed (issues "Experiment throughput"
and "What a multi-task recommender researcher expects"): closed-form task gradients and a 10%
auxiliary holdout. A run folder recorded before a setting existed keeps the value it trained with,
so it resumes, reproduces and is refused exactly as before; a run recorded with the setting keeps
what it says."""

from __future__ import annotations

import pytest
import yaml

from pmtrec_lab.config import BEFORE_THE_SETTING, DEFAULT_AUX_HOLDOUT, load_config, load_run_config
from pmtrec_lab.errors import PmtrecError
from pmtrec_lab.train import train

SYN = {"num_users": 120, "num_items": 80}


def _cfg(*sets: str):
    return load_config(
        base={
            "data": {"name": "synthetic", "loader_args": SYN},
            "encoder": {"name": "mf", "dim": 8},
            "method": {"name": "ew"},
            "optim": {"epochs": 1, "lr": 0.01, "batch_size": 512},
            "progress": "none",
        },
        overrides=list(sets),
    )


def test_the_defaults_are_on_and_off_has_one_form():
    cfg = _cfg()
    assert cfg.data.aux_holdout == DEFAULT_AUX_HOLDOUT == 0.1
    assert cfg.optim.task_gradients == "analytic"
    assert _cfg("data.aux_holdout=0").data.aux_holdout is None  # 0 and null both mean off
    assert _cfg("data.aux_holdout=0").to_yaml() == _cfg("data.aux_holdout=null").to_yaml()


def _without_the_settings(record: dict) -> dict:
    """``record`` (a run's configuration) as written before the two settings existed: neither key."""
    for section, keys in BEFORE_THE_SETTING.items():
        for key in keys:
            del record[section][key]
    return record


def _config_yaml_before_the_settings(out) -> None:
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(_without_the_settings(yaml.safe_load(path.read_text())), sort_keys=False))


def _record(tmp_path, name, drop: bool, *sets: str):
    """A finished run's folder; with ``drop``, its ``config.yaml`` as a run recorded before the two
    settings existed wrote it."""
    out = tmp_path / name
    train(_cfg(*sets), out)
    if drop:
        _config_yaml_before_the_settings(out)
    return out


OLD = ("data.aux_holdout=0", "optim.task_gradients=autograd")


def test_a_record_without_the_settings_reads_as_the_run_it_was(tmp_path):
    old = _record(tmp_path, "old", True, *OLD)
    cfg = load_run_config(old / "config.yaml")
    assert cfg.data.aux_holdout is None and cfg.optim.task_gradients == "autograd"
    # a record that states the settings keeps them, the old values and today's defaults alike
    assert load_run_config(_record(tmp_path, "new", False) / "config.yaml").optim.task_gradients == "analytic"
    assert load_run_config(_record(tmp_path, "new", False) / "config.yaml").data.aux_holdout == 0.1
    pinned = load_run_config(_record(tmp_path, "pinned", False, *OLD) / "config.yaml")
    assert pinned.to_yaml() == cfg.to_yaml()


def test_an_old_run_is_returned_under_its_own_settings_and_refused_under_the_new_defaults(tmp_path):
    old = _record(tmp_path, "old", True, *OLD)
    before = (old / "metrics.json").read_text()
    run = train(_cfg(*OLD), old)  # the same command with the old values pinned: the same run, not retrained
    assert run.finished and (old / "metrics.json").read_text() == before
    with pytest.raises(PmtrecError, match="different configuration"):
        train(_cfg(), old)  # the new defaults are another run: never mixed into the old folder
    assert (old / "metrics.json").read_text() == before
    (old / "last.pt").unlink(missing_ok=True)  # as committed run folders are: no checkpoints
    with pytest.raises(PmtrecError, match="different configuration"):
        train(_cfg(), old)  # still refused: a finished run is never replaced by another one
    assert (old / "metrics.json").read_text() == before


def test_datasets_info_says_what_the_default_holdout_keeps_out(capsys):
    from pmtrec_lab.cli import main

    loader = "loader_args={num_users: 120, num_items: 80}"
    assert main(["datasets", "info", "synthetic", "--set", loader]) == 0
    text = capsys.readouterr().out
    assert "aux_holdout: (0.1 of each auxiliary set, never trained on)" in text
    assert "    friends: valid " in text and ", test " in text
    assert main(["datasets", "info", "synthetic", "--set", loader, "--set", "aux_holdout=0"]) == 0
    assert "aux_holdout" not in capsys.readouterr().out


def _as_before_the_settings(path) -> None:
    """Drop the two settings from a checkpoint's record of its run, as one written before they existed."""
    import torch

    saved = torch.load(path, weights_only=True)
    _without_the_settings(saved["state"]["config"])
    torch.save(saved, path)


def test_a_paused_old_run_resumes_to_the_run_it_was_and_evaluates(tmp_path, capsys):
    """A run paused before the switch (config.yaml and checkpoints without the two settings)
    resumes under the old values to exactly the metrics of the same run trained whole, and
    ``evaluate`` reads it; the checkpoints' records are read as the run trained, not compared as
    written (they would differ in the two keys)."""
    from pmtrec_lab.cli import main

    whole = train(_cfg(*OLD, "optim.epochs=3"), tmp_path / "whole")
    paused = tmp_path / "paused"
    train(_cfg(*OLD, "optim.epochs=3"), paused, max_epochs_this_call=1)
    _config_yaml_before_the_settings(paused)
    for name in ("last.pt", "best.pt"):
        _as_before_the_settings(paused / name)
    resumed = train(_cfg(*OLD, "optim.epochs=3"), paused)
    assert resumed.finished and resumed.metrics["epochs_run"] == 3
    strip = {k: v for k, v in resumed.metrics.items() if k != "seconds"}
    assert strip == {k: v for k, v in whole.metrics.items() if k != "seconds"}
    capsys.readouterr()
    assert main(["evaluate", str(paused)]) == 0
    out = capsys.readouterr().out
    assert f"{whole.metrics['test']['ndcg@20']:.4f}" in out
