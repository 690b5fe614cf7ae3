"""Four committed v3-grid runs retrain to the same metrics and histories, bit for bit (every
``seconds`` field aside, one torch thread): lastfm at lr 3e-3, seed 0, of EW, PMTRec (the v3
default), EW with the default GMB and PCGrad. They span the plain step, the per-entity step with
PMTRec's stages, the per-entity GMB on uniform weights and a gradient-surgery baseline.

This is the guard that every refactor and speed-up promising to move no number runs against
(issues "PMTRec you can read against its paper" and "Experiment throughput"): a change that
reorders a float sum anywhere in data loading, sampling, the step, evaluation or early stopping
fails it, naming the first value that moved."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmtrec_lab.compare.reproduce import reproduce, without_seconds

RUNS = Path(__file__).resolve().parents[1] / "results" / "grid-v3" / "runs" / "lastfm"
REFERENCES = {
    "ew": "lr0.003-seed0-046b13ac",
    "pmtrec": "lr0.003-seed0-eefa2ecd",
    "ew-gmb": "lr0.003-seed0-689fd8bf",
    "pcgrad": "lr0.003-seed0-7e9e7485",
}


def test_without_seconds_drops_wall_time_at_every_depth():
    record = {"seconds": 1.0, "a": [{"seconds": 2.0, "loss": 0.5}], "b": {"seconds": 3, "x": 1}}
    assert without_seconds(record) == {"a": [{"loss": 0.5}], "b": {"x": 1}}


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("method", list(REFERENCES))
def test_reference_run_retrains_bit_for_bit(method, shared_datasets, tmp_path):
    result = reproduce(RUNS / method / REFERENCES[method], work=tmp_path, data_dir=shared_datasets)
    assert result.identical, f"{method}: {result.first_difference}"


def test_a_changed_record_is_reported_with_its_first_difference(tmp_path):
    """The check can fail: a small synthetic run reproduces, and the same run with one value of
    its history nudged by one ulp is named as differing exactly there (and keeps no rerun rows)."""
    import json
    import math

    from pmtrec_lab.config import RunConfig
    from pmtrec_lab.train import train

    cfg = RunConfig.model_validate(
        {
            "data": {"name": "synthetic", "loader_args": {"num_users": 120, "num_items": 80}},
            "encoder": {"name": "mf", "dim": 8},
            "method": {"name": "pmtrec"},
            "optim": {"epochs": 3, "batch_size": 512},
            "progress": "none",
        }
    )
    run = tmp_path / "run"
    train(cfg, run)
    (run / "per_user_test.parquet").unlink()
    assert reproduce(run, work=tmp_path).identical
    history = json.loads((run / "history.json").read_text())
    history[2]["loss/rec"] = math.nextafter(history[2]["loss/rec"], 1.0)
    (run / "history.json").write_text(json.dumps(history))
    result = reproduce(run, keep_per_user=True, work=tmp_path)
    assert result.differing == ("history.json",)
    assert result.first_difference.startswith("history.json[2]/loss/rec")
    assert not (run / "per_user_test.parquet").exists()
