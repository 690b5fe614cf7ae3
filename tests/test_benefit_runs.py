"""The benefit map end to end on a small real grid: runs record per-entity validation metrics, the
gathered table is what the run files hold, the tables rebuild from the committed table alone, and
a run without per-entity files is named rather than skipped."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pmtrec_lab.benefit.measure import ENTITY_FILE, WEIGHTS_FILE, gather, gather_weights
from pmtrec_lab.benefit.report import build, main
from pmtrec_lab.compare import GridSpec, run_grid, run_path
from pmtrec_lab.train import load_run

pytestmark = pytest.mark.slow

USERS, ITEMS = 150, 90


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("benefit")
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["ew", "single-task", "ew-no-social"],
        seeds=[0, 1, 2],
        lrs=[0.01],
        pmtrec="ew",
        variants={"ew-no-social": {"name": "ew", "leave_out": ["social:friends"]}},
        base={
            "data": {"loader_args": {"num_users": USERS, "num_items": ITEMS}},
            "encoder": {"name": "mf", "dim": 16},
            "optim": {"epochs": 2, "batch_size": 512},
            "progress": "none",
        },
    )
    assert run_grid(spec, out) == 9
    return spec, out


@pytest.fixture(scope="module")
def weights(grid, tmp_path_factory):
    spec, _ = grid
    out = tmp_path_factory.mktemp("weights")
    scored = spec.model_copy(
        update={"methods": ["pmtrec", "gcs"], "seeds": [0], "pmtrec": "pmtrec", "variants": {}}
    )
    assert run_grid(scored, out) == 2
    return scored, out


def test_gathered_rows_are_the_runs_per_entity_files(grid):
    spec, out = grid
    entities = gather(out)
    assert set(entities["role"]) == {"full", "all", "social:friends"}
    run = run_path(out, spec, "synthetic", "ew-no-social", 0.01, 1)
    users = pd.read_parquet(run / "per_user_valid.parquet")
    items = pd.read_parquet(run / "per_item_valid.parquet")
    mine = entities[(entities["method"] == "ew-no-social") & (entities["seed"] == 1)]
    assert np.array_equal(mine[mine["side"] == "user"]["value"].to_numpy(), users["ndcg@20"].to_numpy())
    assert np.array_equal(mine[mine["side"] == "item"]["pairs"].to_numpy(), items["pairs"].to_numpy())
    # per-user validation at the selected epoch is what metrics.json recorded for that epoch
    assert users["ndcg@20"].mean() == pytest.approx(load_run(run).metrics["valid"]["ndcg@20"], abs=1e-12)


def test_tables_rebuild_from_the_committed_table_alone(grid, tmp_path):
    spec, out = grid
    first = build(out, n_boot=200)
    assert first is not None and (out / ENTITY_FILE).is_file()
    assert (out / "per_entity_test.parquet").is_file() and (out / "transfer.csv").is_file()
    assert set(first.transfer["task"]) == {"all", "social:friends"}
    assert set(first.overall["task"]) == {"all", "social:friends"}
    assert set(first.overall["side"]) == {"user", "item"}
    clone = tmp_path / "clone"
    shutil.copytree(out, clone)
    for f in clone.rglob("runs/**/per_*_*.parquet"):
        f.unlink()
    # finished runs without per-entity files: the build names the file instead of skipping the run
    with pytest.raises(FileNotFoundError, match=r"per_user_valid\.parquet: missing; .* retrain it"):
        build(clone, n_boot=200)
    shutil.rmtree(clone / "runs")
    again = build(clone, n_boot=200)
    pd.testing.assert_frame_equal(again.overall, first.overall)
    pd.testing.assert_frame_equal(again.transfer, first.transfer)
    assert (clone / "benefit.md").read_text() == (out / "benefit.md").read_text()


def test_an_empty_folder_writes_nothing_and_exits_2(grid, tmp_path, capsys):
    spec, out = grid
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(out / "grid.resolved.yaml", empty / "grid.resolved.yaml")
    assert main([str(empty)]) == 2
    assert "nothing written" in capsys.readouterr().err
    assert sorted(p.name for p in empty.iterdir()) == ["grid.resolved.yaml"]


def test_weightings_are_scored_against_the_map_of_the_seeds_that_did_not_train_them(grid, weights):
    _, out = grid
    spec, wout = weights
    learned = gather_weights(wout)
    assert set(learned["method"]) == {"pmtrec", "gcs"} and set(learned["seed"]) == {0}
    run = run_path(wout, spec, "synthetic", "gcs", 0.01, 0)
    stored = pd.read_parquet(run / "diagnostics" / "entity_weights.parquet")
    best = load_run(run).metrics["best_epoch"]
    expected_epoch = max(e for e in stored["epoch"].unique() if e <= best)
    assert set(learned[learned["method"] == "gcs"]["epoch"]) == {expected_epoch}
    tables = build(out, n_boot=100, weights=wout)
    scores = tables.scores
    assert set(scores["map_seeds"]) == {"1,2"}
    row = scores[
        (scores["method"] == "gcs") & (scores["task"] == "social:friends") & (scores["side"] == "user")
    ]
    assert len(row) == 1 and row["entities"].iloc[0] == USERS
    assert (out / "weight_scores.csv").is_file() and (wout / WEIGHTS_FILE).is_file()
    assert "Weightings scored against the map" in (out / "benefit.md").read_text()


def test_a_finished_weighting_run_without_stored_weights_is_named(weights, tmp_path):
    spec, wout = weights
    clone = tmp_path / "w"
    shutil.copytree(wout, clone)
    run = run_path(clone, spec, "synthetic", "pmtrec", 0.01, 0)
    (run / "diagnostics" / "entity_weights.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"entity_weights\.parquet: missing; .*diagnostics off"):
        gather_weights(clone)


def test_the_map_shows_a_task_that_helps_cold_users_and_hurts_active_ones(tmp_path):
    """Planted: a community label that is right for the cold two thirds of users and random for the
    active third (``synthetic``'s ``mislabel_active``), with activity spread out. EW with the label
    task against EW without it, 3 seeds: the coldest bin of training degree must gain (its bootstrap
    interval above 0), the most active bin must lose, and training degree must explain far more of
    the benefit's variance than permuted bins."""
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["ew", "ew-no-community"],
        seeds=[0, 1, 2],
        lrs=[0.01],
        pmtrec="ew",
        variants={"ew-no-community": {"name": "ew", "leave_out": ["user_label:community"]}},
        base={
            "data": {
                "loader_args": {
                    "num_users": 1500,
                    "num_items": 300,
                    "interactions_per_user": 12,
                    "activity_spread": 1.0,
                    "num_communities": 10,
                    "mislabel_active": 0.33,
                }
            },
            "tasks": {"include": ["user_label:community"]},
            "encoder": {"name": "mf", "dim": 16},
            "optim": {"epochs": 20, "batch_size": 1024},
            "eval": {"patience": 3},
            "progress": "none",
        },
    )
    run_grid(spec, tmp_path)
    tables = build(tmp_path, n_boot=500)
    bins = tables.bins[
        (tables.bins["task"] == "user_label:community")
        & (tables.bins["side"] == "user")
        & (tables.bins["feature"] == "train_degree")
    ].sort_values("bin")
    coldest, most_active = bins.iloc[0], bins.iloc[-1]
    assert coldest["ci_low"] > 0, bins
    assert most_active["benefit"] < 0, bins
    assert coldest["benefit"] - most_active["benefit"] > 0.03, bins
    structure = tables.structure.set_index(["task", "side", "feature"])
    row = structure.loc[("user_label:community", "user", "train_degree")]
    assert row["r2"] > 3 * row["r2_null_95"], row
    assert (
        tables.reliability.set_index(["task", "side"]).loc[("user_label:community", "user"), "reliability"]
        > 0.3
    )
