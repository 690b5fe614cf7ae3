"""The comparison grid: resumable, learning rate chosen on seed-0 validation, tables and tests."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from pmtrec_lab.compare import (
    GridSpec,
    choose_lr,
    grid_baselines,
    grid_progress,
    load_results,
    run_grid,
    run_path,
    summarize,
    tables_from_runs,
)
from pmtrec_lab.train import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["ew", "pcgrad", "pmtrec", "ew-align"],
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
    assert trained == 4 * (2 + 1)  # two lrs on seed 0, then seed 1 at the chosen lr
    assert run_grid(spec, out) == 0  # finished runs are not redone
    # every run trained on the dataset the grid's base configuration names (150 synthetic users)
    run = load_run(run_path(out, spec, "synthetic", "ew", 0.01, 0))
    assert run.config.data.loader_args == {"num_users": 150, "num_items": 90}
    assert len(run.per_user) + run.metrics["users_without_test_items"] <= 150
    assert (out / "grid.resolved.yaml").is_file()


def test_lr_is_chosen_on_seed0_validation(grid):
    spec, out, _ = grid
    for method in spec.methods:
        vals = {
            lr: load_run(run_path(out, spec, "synthetic", method, lr, 0)).metrics["valid"]["ndcg@20"]
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
    assert sig["pmtrec_seeds"] == 2 and sig["baseline_seeds"] == 2
    groups = tables["significance_groups"]
    assert groups[groups["grouping"] == "activity"]["group"].tolist() == ["cold", "medium", "active"]
    loaded = load_results(out)
    pd.testing.assert_frame_equal(loaded["summary"], pd.read_csv(out / "summary.csv"))
    md = (out / "summary.md").read_text()
    assert "| synthetic | pmtrec |" in md
    # the wide table: one row per method, the best mean of the dataset in bold
    top = s.loc[s["ndcg20_mean"].idxmax()]
    assert f"| {top['method']} | **{100 * top['ndcg20_mean']:.2f} ± " in md


def test_ablation_table_compares_the_family_with_pmtrec_and_ew(grid):
    spec, out, _ = grid
    tables = summarize(out, spec)
    a = tables["ablation"].set_index("method")
    assert list(a.index) == ["pmtrec", "ew-align", "ew"]  # pcgrad is no ablation
    mean = tables["summary"].set_index("method")["ndcg20_mean"]
    # the switches are read off the methods themselves
    switches = ["weights", "align", "schedule", "rho"]
    assert a.loc["pmtrec", switches].tolist() == ["personalized", True, "linear", 1.0]  # v3's GMB
    assert a.loc["ew-align", ["weights", "align", "schedule"]].tolist() == ["uniform", True, "none"]
    assert a.loc["ew", ["weights", "align"]].tolist() == ["uniform", False]
    assert a.loc["ew-align", "rel_vs_pmtrec"] == pytest.approx(mean["ew-align"] / mean["pmtrec"] - 1)
    assert a.loc["pmtrec", "rel_vs_ew"] == pytest.approx(mean["pmtrec"] / mean["ew"] - 1)
    assert a.loc["pmtrec", "rel_vs_pmtrec"] == 0.0 and pd.isna(a.loc["pmtrec", "p_value"])
    assert 0.0 <= a.loc["ew-align", "p_value"] <= 1.0
    # every run evaluates the same test users, so the mean paired difference over users equals the
    # difference of the run-level means
    assert a.loc["ew-align", "mean_diff"] == pytest.approx(mean["ew-align"] - mean["pmtrec"], abs=1e-9)
    assert "### Ablation" in (out / "summary.md").read_text()
    assert load_results(out)["ablation"]["method"].tolist() == ["pmtrec", "ew-align", "ew"]


def test_parallel_grid_gives_the_sequential_results(grid, tmp_path):
    spec, out, _ = grid
    small = spec.model_copy(update={"methods": ["ew", "pmtrec"]})
    assert run_grid(small, tmp_path, jobs=2) == 2 * (2 + 1)
    for method in small.methods:
        for lr in small.lrs:
            for seed in small.seeds:
                a, b = (
                    run_path(out, small, "synthetic", method, lr, seed),
                    run_path(tmp_path, small, "synthetic", method, lr, seed),
                )
                assert a.exists() == b.exists()
                if a.exists():
                    assert load_run(b).metrics["test"] == load_run(a).metrics["test"]
    assert run_grid(small, tmp_path, jobs=2) == 0  # resumable in parallel too


def test_jobs_must_be_positive_and_not_combined_with_max_runs(tmp_path):
    with pytest.raises(ValueError, match="--jobs"):
        run_grid(GridSpec(), tmp_path, jobs=0)
    with pytest.raises(ValueError, match="--max-runs"):
        run_grid(GridSpec(), tmp_path, max_runs=1, jobs=2)
    assert not (tmp_path / "grid.resolved.yaml").exists()


def test_progress_lists_what_is_still_to_run(grid):
    spec, out, _ = grid
    prog = summarize(out, spec)["progress"]
    assert prog["done"].sum() == prog["planned"].sum() == len(spec.methods) * 3
    assert "(the grid is complete)" in (out / "summary.md").read_text()
    wider = spec.model_copy(update={"seeds": [0, 1, 2], "methods": [*spec.methods, "dwa"]})
    prog = grid_progress(out, wider).set_index("method")
    lr = choose_lr(out, "synthetic", "ew", spec)
    assert prog.loc["ew", "pending"] == f"lr{lr:g}-seed2"
    assert prog.loc["dwa", "pending"] == "lr0.01-seed0 lr0.002-seed0 lr?-seed1 lr?-seed2"
    assert prog.loc["dwa", ["done", "planned"]].tolist() == [0, 4]


def test_tables_rebuild_from_the_committed_per_user_file(grid, tmp_path):
    """A fresh clone has no run-level per-user files (they are not committed): the significance
    and ablation tables come back the same from the grid's one per-user file."""
    spec, out, _ = grid
    tables = summarize(out, spec)
    clone = tmp_path / "clone"
    shutil.copytree(out, clone)
    removed = [p.unlink() for p in clone.rglob("runs/**/per_user_test.parquet")]
    assert removed and (clone / "per_user_ndcg.parquet").is_file()
    again = summarize(clone, spec)
    for name in ("significance", "significance_groups", "ablation"):
        pd.testing.assert_frame_equal(again[name], tables[name])
    # without it the tests cannot be made, and the table says so: a row with no users and no p-value
    (clone / "per_user_ndcg.parquet").unlink()
    untested = summarize(clone, spec)["significance"]
    assert (untested["n"] == 0).all() and untested["p_value"].isna().all() and len(untested) == 1


def _one_seed_runs(scores: list[tuple[str, float]]) -> pd.DataFrame:
    """One run per method on dataset ``d``, every metric equal to its score."""
    return pd.DataFrame(
        [
            {
                "dataset": "d",
                "method": m,
                "seed": 0,
                "valid_ndcg@20": v,
                "test_recall@20": v,
                "test_ndcg@20": v,
                "epochs_run": 1,
                "run_dir": "/nonexistent",
            }
            for m, v in scores
        ]
    )


def test_grid_variant_labels_are_never_the_strongest_baseline():
    """A label that is no registered baseline and no grid variant of one (here one better on
    validation, with no ``variants`` entry) is not a candidate for the strongest baseline."""
    rows = _one_seed_runs([("ew", 0.10), ("ew-lr-sweep", 0.20), ("pmtrec", 0.15)])
    strongest = tables_from_runs(rows)["strongest_baseline"]
    assert strongest["baseline"].tolist() == ["ew"]


def test_variants_of_a_baseline_compete_for_the_strongest_baseline():
    """static-lambda's grid points (``static0.1`` ...) are a baseline's configurations and compete
    by validation; a variant of a PMTRec-family method (``ew-gmb``) does not, even when it is best."""
    rows = _one_seed_runs([("ew", 0.10), ("static0.1", 0.20), ("gmb-variant", 0.30), ("pmtrec", 0.15)])
    variants = {
        "static0.1": {"name": "static-lambda", "params": {"weight": 0.1}},
        "gmb-variant": {"name": "ew-gmb", "params": {}},
    }
    assert grid_baselines(variants) >= {"ew", "static0.1", "static-lambda", "gcs"}
    assert "gmb-variant" not in grid_baselines(variants)
    strongest = tables_from_runs(rows, variants=variants)["strongest_baseline"]
    assert strongest["baseline"].tolist() == ["static0.1"]


def test_ablation_switches_of_a_tuned_grid_are_each_datasets_tuned_ones():
    """A tuned grid runs each dataset's PMTRec with its own tuned parameters (``compare --tuned``):
    the ablation table's switches must say so, not the method's defaults (the tuned study chose
    shared weights on amazon, personalized on ciao)."""
    from pmtrec_lab.compare.tables import method_switches

    default = method_switches("pmtrec")
    tuned = method_switches("pmtrec", None, {"weight_mode": "shared", "rho": 0.25})
    assert default["weights"] == "personalized" and default["rho"] != 0.25
    assert tuned == {**default, "weights": "shared", "rho": 0.25}
    ew = {"weights": "uniform", "align": False, "schedule": "none", "rho": 0.0}
    assert method_switches("ew", None, {}) == ew
