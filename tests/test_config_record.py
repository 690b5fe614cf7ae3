"""A run folder's ``config.yaml`` records every parameter its method trained with (defaults <
preset < given), not ``params: {}``; a folder written before, with only the given parameters,
is still recognised as the same run, and a different parameter is still refused."""

from __future__ import annotations

import pytest
import yaml

from pmtrec_lab.config import load_config
from pmtrec_lab.errors import PmtrecError
from pmtrec_lab.mtl import resolve_params
from pmtrec_lab.train import train

pytestmark = pytest.mark.slow

CASES = [("ew", {}), ("pmtrec-v2", {}), ("static-lambda", {"weight": 0.3})]


def _cfg(method: str, params: dict):
    return load_config(
        base={
            "data": {"name": "synthetic", "loader_args": {"num_users": 120, "num_items": 80}},
            "encoder": {"name": "mf", "dim": 8},
            "method": {"name": method, "params": params},
            "optim": {"epochs": 1, "lr": 0.01},
            "progress": "none",
        }
    )


@pytest.mark.parametrize("method,params", CASES)
def test_config_yaml_records_the_resolved_parameters(method, params, tmp_path):
    run = train(_cfg(method, params), tmp_path / "r")
    recorded = yaml.safe_load((run.path / "config.yaml").read_text())["method"]
    assert recorded["name"] == method
    assert recorded["params"] == resolve_params(method, params)
    if method == "pmtrec-v2":
        assert recorded["params"]["gmb_mode"] == "side" and len(recorded["params"]) > 20


@pytest.mark.parametrize("method,params", CASES)
def test_a_folder_recording_only_the_given_parameters_is_the_same_run(method, params, tmp_path):
    out = tmp_path / "r"
    first = train(_cfg(method, params), out)
    older = yaml.safe_load((out / "config.yaml").read_text())
    older["method"]["params"] = dict(params)  # as folders were written before
    (out / "config.yaml").write_text(yaml.safe_dump(older, sort_keys=False))
    again = train(_cfg(method, params), out)  # finished: returned as it is, not refused
    assert again.metrics == first.metrics


def test_a_different_parameter_is_still_refused(tmp_path):
    out = tmp_path / "r"
    train(_cfg("static-lambda", {"weight": 0.3}), out)
    with pytest.raises(PmtrecError, match="different configuration"):
        train(_cfg("static-lambda", {"weight": 0.1}), out)


@pytest.mark.parametrize("method,params", CASES)
def test_evaluate_accepts_the_runs_own_checkpoint_whichever_form_it_recorded(method, params, tmp_path):
    """A checkpoint records its run's configuration; it compares equal to the folder's config.yaml
    whether it recorded the resolved parameters (now) or only the given ones (before)."""
    from pmtrec_lab.train import evaluate_run
    from pmtrec_lab.train.run import load_checkpoint, save_checkpoint

    cfg = _cfg(method, params)
    run = train(cfg, tmp_path / "r")
    assert evaluate_run(run.path) == pytest.approx(run.metrics["test"])
    best = load_checkpoint(run.path / "best.pt")
    assert best["config"]["method"]["params"] == resolve_params(method, params)
    best["config"]["method"]["params"] = dict(params)  # as checkpoints were written before
    save_checkpoint(run.path / "best.pt", best)
    assert evaluate_run(run.path) == pytest.approx(run.metrics["test"])
