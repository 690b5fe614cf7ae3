"""The comparison grid: resumable, learning rate chosen on seed-0 validation, tables and tests."""

from __future__ import annotations

import pandas as pd
import pytest

from pmtrec_lab.compare import GridSpec, choose_lr, load_results, run_grid, run_path, summarize
from pmtrec_lab.train import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["ew", "pcgrad", "pmtrec"],
        seeds=[0, 1],
        lrs=[0.01, 0.002],
        base={
            "data": {"loader_args": {"num_users": 150, "num_items": 90}},
            "encoder": {"name": "mf", "dim": 16},
            "optim": {"epochs": 2, "batch_size": 512},
            "progress": "none",
        },
    )
    trained = run_grid(spec, out)
    return spec, out, trained


def test_grid_runs_each_configuration_once_and_resumes(grid):
    spec, out, trained = grid
    assert trained == 3 * (2 + 1)  # two lrs on seed 0, then seed 1 at the chosen lr
    assert run_grid(spec, out) == 0  # finished runs are not redone
    # every run trained on the dataset the grid's base configuration names (150 synthetic users)
    run = load_run(run_path(out, "synthetic", "ew", 0.01, 0))
    assert run.config.data.loader_args == {"num_users": 150, "num_items": 90}
    assert len(run.per_user) + run.metrics["users_without_test_items"] <= 150
    assert (out / "grid.resolved.yaml").is_file()


def test_lr_is_chosen_on_seed0_validation(grid):
    spec, out, _ = grid
    for method in spec.methods:
        vals = {
            lr: load_run(run_path(out, "synthetic", method, lr, 0)).metrics["valid"]["ndcg@20"]
            for lr in spec.lrs
        }
        assert choose_lr(out, "synthetic", method, spec) == max(vals, key=vals.get)


def test_tables_strongest_baseline_and_significance(grid):
    spec, out, _ = grid
    tables = summarize(out, spec)
    s = tables["summary"]
    assert set(s["method"]) == set(spec.methods) and (s["seeds"] == 2).all()
    base = s[s["method"].isin(["ew", "pcgrad"])]
    best = base.loc[base["valid_ndcg20"].idxmax(), "method"]
    assert tables["strongest_baseline"]["baseline"].tolist() == [best]
    sig = tables["significance"].iloc[0]
    assert sig["baseline"] == best and 0.0 <= sig["p_value"] <= 1.0 and sig["n"] > 0
    assert set(tables["significance_groups"]["group"]) >= {"cold", "medium", "active"}
    loaded = load_results(out)
    pd.testing.assert_frame_equal(loaded["summary"], pd.read_csv(out / "summary.csv"))
    assert "| synthetic | pmtrec |" in (out / "summary.md").read_text()
