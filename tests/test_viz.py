"""Figure builders (pmtrec_lab.viz) on real artifacts of tiny synthetic runs, the small comparison
grid and the headline values the notebooks record.

Every figure is checked on contents that could be wrong: trace counts per task/side, plotted
values against the tables they come from, normalizations (densities integrate to 1, stacked
weights sum to 1, the main task's magnitude ratio is 1) and placeholders where data is absent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pmtrec_lab import viz
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.reports.headlines import (
    conflict_headlines,
    grid_headlines,
    magnitude_headlines,
    train_headlines,
    weight_headlines,
)
from pmtrec_lab.reports.small_grid import find_results, is_baseline, run_small_grid, summarize_grid
from pmtrec_lab.train import train
from tests.helpers import tiny_synthetic

SYN = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}
TINY = {
    "dataset": "synthetic",
    "loader_args": SYN,
    "k_core": 2,
    "dim": 16,
    "epochs": 4,
    "lr": 0.01,
    "batch_size": 256,
}


def tiny_cfg(method: str = "pmtrec", **over):
    return notebook_config(**{**TINY, "method": method, **over})


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


@pytest.fixture(scope="module")
def pm_run(ds, tmp_path_factory):
    return train(tiny_cfg(), tmp_path_factory.mktemp("pm"), dataset=ds)


@pytest.fixture(scope="module")
def ew_run(ds, tmp_path_factory):
    return train(tiny_cfg("ew"), tmp_path_factory.mktemp("ew"), dataset=ds)


@pytest.fixture(scope="module")
def diag(pm_run):
    return pm_run.diagnostics()


@pytest.fixture(scope="module")
def activity(ds):
    return viz.entity_activity(ds)


def _tasks(run) -> list[str]:
    return [c.removeprefix("loss/") for c in run.history.columns if c.startswith("loss/")]


# ------------------------------------------------------------------------------------ training


def test_learning_curves_plot_every_task_relative_and_the_validation_metric(pm_run):
    fig = viz.learning_curves(pm_run.history, best_epoch=pm_run.metrics["best_epoch"])
    tasks = _tasks(pm_run)
    names = [t.name for t in fig.data]
    assert names[: len(tasks)] == tasks
    for trace, task in zip(fig.data, tasks):
        assert trace.y[0] == pytest.approx(1.0)  # relative to the first epoch, epoch 1
        np.testing.assert_allclose(trace.customdata, pm_run.history[f"loss/{task}"])
    valid = next(t for t in fig.data if t.name == "valid ndcg@20")
    np.testing.assert_allclose(valid.y, pm_run.history["valid/ndcg@20"])
    beta = next(t for t in fig.data if t.name.startswith("beta"))
    assert beta.y[-1] > beta.y[0]  # the TF schedule grows
    # epochs count from 1 everywhere (issue 26, item 6): the labels name the first epoch so
    assert pm_run.history["epoch"].iloc[0] == 1
    labels = [a.text for a in fig.layout.annotations] + [fig.layout.yaxis.title.text]
    assert not any("epoch 0" in text for text in labels), labels
    assert any("epoch 1" in text for text in labels), labels


def test_metrics_bar_and_table_hold_the_test_metrics(pm_run):
    table = viz.metrics_table(pm_run.metrics)
    assert list(table.columns) == ["@10", "@20", "@50"]
    assert table.loc["ndcg", "@20"] == pytest.approx(pm_run.metrics["test"]["ndcg@20"])
    fig = viz.metrics_bar(pm_run.metrics)
    assert [t.name for t in fig.data] == ["@10", "@20", "@50"]
    bar20 = fig.data[1]
    assert dict(zip(bar20.x, bar20.y))["recall"] == pytest.approx(pm_run.metrics["test"]["recall@20"])
    assert viz.is_missing(viz.metrics_bar({}))


def test_group_metrics_figure_has_activity_and_social_panels_on_synthetic(pm_run):
    fig = viz.group_metrics_figure(pm_run.groups)
    assert len(fig.data) == 2
    activity = dict(zip(fig.data[0].x, fig.data[0].y))
    assert list(activity) == ["cold", "medium", "active"]
    assert activity["cold"] == pytest.approx(pm_run.groups["activity"]["cold"]["ndcg@20"])
    assert set(fig.data[1].x) == {"with_links", "without_links"}
    # ml-100k-like groups (no social links): the title says what is missing, the figure goes on
    no_social = viz.group_metrics_figure({"activity": pm_run.groups["activity"]})
    assert len(no_social.data) == 1 and "no social links" in no_social.layout.title.text


# ------------------------------------------------------------------------------------ weights


def test_weights_are_per_entity_distributions_that_sum_to_one(diag):
    ew = diag["entity_weights"]
    live = viz.applicable_weights(ew)
    last = live[live["epoch"] == live["epoch"].max()]
    sums = last.groupby(["side", "entity"])["weight"].sum()
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    mw = viz.mean_task_weights(ew)
    for side, part in mw.groupby("side"):
        assert part["mean"].sum() == pytest.approx(1.0, abs=1e-5), side
    fig = viz.weight_distributions(ew)
    pairs = {(s, t) for s, t in zip(last["side"], last["task"])}
    assert len(fig.data) == len(pairs)
    rec_user = last[(last["side"] == "user") & (last["task"] == "rec")]["weight"].to_numpy()
    first = fig.data[0]
    assert first.name == "rec"
    np.testing.assert_allclose(np.sort(first.y), np.sort(rec_user), rtol=1e-6)


def test_weights_are_personalized_and_differ_between_entities(diag):
    mw = viz.mean_task_weights(diag["entity_weights"])
    assert (mw["std"] > 1e-4).any()
    assert ((mw["p10"] <= mw["mean"]) & (mw["mean"] <= mw["p90"])).all()


def test_weights_vs_activity_with_social_links(diag, activity, ds):
    assert viz.has_social_links(ds)
    fig = viz.weights_vs_activity(diag["entity_weights"], activity)
    assert fig.layout.meta["social"] is True
    # panels: users (user tasks), items (item tasks), users vs social degree (user tasks)
    live = viz.applicable_weights(diag["entity_weights"])
    n_user = live.loc[live["side"] == "user", "task"].nunique()
    n_item = live.loc[live["side"] == "item", "task"].nunique()
    assert len(fig.data) == 2 * n_user + n_item
    xaxes = {t.xaxis for t in fig.data}
    assert xaxes == {"x", "x2", "x3"}
    # binned means are means of the entities' weights: within [0, 1] and bins ordered
    for t in fig.data:
        assert all(0 <= y <= 1 for y in t.y) and list(t.x) == sorted(t.x)


def test_weights_vs_activity_without_social_links_says_so(diag, activity):
    no_social = activity.drop(columns=["social_degree"])
    fig = viz.weights_vs_activity(diag["entity_weights"], no_social)
    assert fig.layout.meta["social"] is False
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    assert any("no social links" in a.text for a in fig.layout.annotations)
    corr = viz.weight_activity_correlation(diag["entity_weights"], no_social)
    assert set(corr["against"]) == {"activity"}
    assert corr["spearman"].between(-1, 1).all()


def test_weights_over_epochs_and_trajectory(diag):
    ew = diag["entity_weights"]
    fig = viz.weights_over_epochs(ew)
    live = viz.applicable_weights(ew)
    means = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(means) == live.groupby(["side", "task"]).ngroups
    user_rec = live[(live["side"] == "user") & (live["task"] == "rec")].groupby("epoch")["weight"].mean()
    np.testing.assert_allclose(means[0].y, user_rec.to_numpy(), rtol=1e-6)

    entity = viz.pick_entity(ew, "user")
    traj = viz.entity_trajectory(ew, "user", entity)
    stacked = np.sum([np.asarray(t.y) for t in traj.data], axis=0)
    np.testing.assert_allclose(stacked, 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="no recorded weights"):
        viz.pick_entity(ew, "user", 10_000)


def test_weight_figures_say_when_the_method_records_no_weights(ew_run, activity):
    ew = ew_run.diagnostics()["entity_weights"]
    for fig in (
        viz.weight_distributions(ew),
        viz.weights_vs_activity(ew, activity),
        viz.weights_over_epochs(ew),
        viz.entity_trajectory(ew, "user", viz.pick_entity(ew, "user")),
    ):
        assert viz.is_missing(fig) and "no per-entity" in viz.missing_reason(fig)
    assert weight_headlines(ew, activity) == {"weights_recorded": False}


# ------------------------------------------------------------------------------------ gradients


def test_cosine_histograms_are_densities_per_aux_task(diag):
    h = diag["cosine_hist"]
    fig = viz.cosine_histograms(h, "raw")
    raw = h[h["kind"] == "raw"]
    pairs = raw.groupby(["task", "side"]).ngroups
    epochs = raw["epoch"].nunique()
    assert len(fig.data) == pairs * min(3, epochs)
    width = float((raw["bin_right"] - raw["bin_left"]).iloc[0])
    for t in fig.data:
        assert float(np.sum(t.y) * width) == pytest.approx(1.0)
    assert viz.is_missing(viz.cosine_histograms(h, "no-such-kind"))


def test_combined_gradient_never_opposes_main_with_alignment(diag):
    fig = viz.cosine_before_after(diag["cosine_hist"])
    combined = [t for t in fig.data if t.name.startswith("combined")]
    assert combined
    for t in combined:
        x, y = np.asarray(t.x), np.asarray(t.y)
        assert y[x < 0].sum() == 0  # no mass left of zero
    cs = viz.conflict_summary(diag["epochs"])
    assert (cs.loc[cs["task"] == "combined", "conflict_fraction"] == 0).all()
    assert cs["conflict_fraction"].between(0, 1).all()


def test_conflict_fraction_over_epochs_matches_the_table(diag):
    e = diag["epochs"]
    fig = viz.conflict_fraction_over_epochs(e)
    raw = e[e["metric"] == "conflict_fraction"]
    comb = e[e["metric"] == "conflict_fraction_combined"]
    assert len(fig.data) == raw.groupby(["task", "side"]).ngroups + comb["side"].nunique()
    first = raw[(raw["task"] == raw["task"].iloc[0]) & (raw["side"] == raw["side"].iloc[0])]
    np.testing.assert_allclose(fig.data[0].y, first.sort_values("epoch")["value"])


def test_norm_ratios_main_task_is_one_and_gmb_pulls_towards_it(diag, ew_run):
    nr = viz.norm_ratios(diag["epochs"])
    assert (nr["source"] == "method").all()
    main = nr[nr["task"] == "rec"]
    np.testing.assert_allclose(main["before"], 1.0)
    aux = nr[nr["task"] != "rec"].dropna()
    # GMB with rho in (0, 1] moves every ratio towards 1 (log distance shrinks)
    assert (np.abs(np.log(aux["after"])) <= np.abs(np.log(aux["before"])) + 1e-9).all()
    fig = viz.norm_ratio_over_epochs(diag["epochs"])
    assert any(t.line.dash == "dash" for t in fig.data)
    summary = viz.magnitude_summary(diag["epochs"])
    assert "rec" not in set(summary["task"])
    for r in summary.itertuples():
        assert r.verdict == ("dominates" if r.before > 2 else "vanishes" if r.before < 0.5 else "balanced")
    # EW reports no balancing: ratios come from raw grad norms, "after" absent
    ew_nr = viz.norm_ratios(ew_run.diagnostics()["epochs"])
    assert (ew_nr["source"] == "grad_norm").all() and ew_nr["after"].isna().all()
    np.testing.assert_allclose(ew_nr.loc[ew_nr["task"] == "rec", "before"], 1.0)
    assert "raw grad norms" in viz.norm_ratio_over_epochs(ew_run.diagnostics()["epochs"]).layout.title.text


def test_gradient_figures_with_no_diagnostics_are_placeholders():
    empty = pd.DataFrame()
    for fig in (
        viz.cosine_histograms(empty),
        viz.cosine_before_after(empty),
        viz.conflict_fraction_over_epochs(empty),
        viz.norm_ratio_over_epochs(empty),
        viz.grad_norm_over_epochs(empty),
        viz.learning_curves(empty),
    ):
        assert viz.is_missing(fig)


# ------------------------------------------------------------------------------------ headlines


def test_headlines_are_json_ready_and_match_the_run(pm_run, diag, activity):
    from pmtrec_lab.reports.record import to_jsonable

    th = train_headlines(pm_run)
    assert th["test_ndcg@20"] == pytest.approx(pm_run.metrics["test"]["ndcg@20"])
    assert th["groups_ndcg@20"]["activity/cold"] == pytest.approx(
        pm_run.groups["activity"]["cold"]["ndcg@20"]
    )
    wh = weight_headlines(diag["entity_weights"], activity)
    assert sum(v for k, v in wh["mean_weight"].items() if k.startswith("user/")) == pytest.approx(
        1.0, abs=1e-5
    )
    assert "user/rec" in wh["spearman_vs_social_degree"]
    ch = conflict_headlines(diag["epochs"])
    assert ch["conflict_fraction_combined"] == {"user": 0.0, "item": 0.0}
    assert 0 < ch["mean_conflict_fraction"] < 1
    mh = magnitude_headlines(diag["epochs"])
    assert set(mh["norm_ratio_before"]) == set(mh["norm_ratio_after"])
    for values in (th, wh, ch, mh):
        to_jsonable(values)


# ------------------------------------------------------------------------------------ comparison


def test_method_comparison_sorts_methods_and_draws_std():
    summary = pd.DataFrame(
        {
            "dataset": ["a", "a", "a", "b"],
            "method": ["ew", "pmtrec", "pmtrec-no-gmb", "pmtrec"],
            "ndcg20_mean": [0.2, 0.3, 0.25, 0.1],
            "ndcg20_std": [0.01, float("nan"), 0.02, 0.0],
        }
    )
    fig = viz.method_comparison(summary)
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == ["ew", "pmtrec-no-gmb", "pmtrec"]
    assert list(fig.data[0].error_y.array) == [0.01, 0.02, 0.0]
    deltas = viz.ablation_deltas(summary)
    d = dict(zip(deltas["method"], deltas["delta"]))
    assert d["ew"] == pytest.approx(-0.1) and d["pmtrec-no-gmb"] == pytest.approx(-0.05)
    assert len(deltas) == 2  # dataset b has nothing but pmtrec
    assert viz.is_missing(viz.method_comparison(None))


def test_small_grid_tables_strongest_baseline_by_validation_and_wilcoxon(tmp_path):
    runs = run_small_grid(
        ["ew", "pcgrad", "pmtrec"],
        ["synthetic"],
        [0],
        base_params={k: v for k, v in TINY.items() if k != "dataset"} | {"epochs": 3},
        runs_dir=tmp_path,
    )
    assert len(runs) == 3 and runs["test_ndcg@20"].notna().all()
    tables = summarize_grid(runs)
    s = tables["summary"]
    assert set(s["method"]) == {"ew", "pcgrad", "pmtrec"}
    base = s[s["method"].map(is_baseline)]
    expected = base.loc[base["valid_ndcg20"].idxmax(), "method"]
    assert tables["strongest_baseline"]["baseline"].tolist() == [expected]
    sig = tables["significance"].iloc[0]
    assert sig["baseline"] == expected and 0 <= sig["p_value"] <= 1
    assert sig["n"] == 120  # every synthetic user has test items
    pm = runs.loc[runs["method"] == "pmtrec", "test_ndcg@20"].iloc[0]
    assert sig["pmtrec_ndcg20"] == pytest.approx(pm)
    gh = grid_headlines(tables, "small grid")
    assert gh["strongest_baseline"] == {"synthetic": expected}
    assert gh["wilcoxon"]["synthetic"]["n"] == 120
    # cached: a second call trains nothing and returns the same rows
    again = run_small_grid(
        ["ew"],
        ["synthetic"],
        [0],
        {k: v for k, v in TINY.items() if k != "dataset"} | {"epochs": 3},
        runs_dir=tmp_path,
    )
    assert again["run_dir"].iloc[0] == runs.loc[runs["method"] == "ew", "run_dir"].iloc[0]


def test_find_results_reads_committed_tables(tmp_path):
    assert find_results(tmp_path / "absent") == {}
    assert find_results(tmp_path) == {}
    grid = tmp_path / "grid1"
    grid.mkdir()
    pd.DataFrame({"dataset": ["x"], "method": ["ew"], "ndcg20_mean": [0.1], "ndcg20_std": [0.0]}).to_csv(
        grid / "summary.csv", index=False
    )
    tables = find_results(tmp_path)
    assert list(tables) == ["summary"] and tables["summary"]["method"].tolist() == ["ew"]
    assert grid_headlines(tables, "r")["results_found"] is True
    assert grid_headlines({}, "r") == {"results_found": False, "source": "r"}
    assert not math.isnan(tables["summary"]["ndcg20_mean"].iloc[0])


# --- issue 26, item 2: notebook 04 shows the default pmtrec's GMB (v3: per entity, reduce-only) ---


def test_magnitude_headlines_record_the_reduce_only_gmb_factors(diag):
    """The default pmtrec records gmb_reduce (mean factor per task); the headlines carry it."""
    mh = magnitude_headlines(diag["epochs"])
    rows = diag["epochs"][diag["epochs"]["metric"] == "gmb_reduce"]
    last = rows[rows["epoch"] == rows["epoch"].max()]
    assert mh["gmb_reduce"] == pytest.approx(dict(zip(last["task"], last["value"])))
    assert min(mh["gmb_reduce"].values()) < 1 and all(0 < f <= 1 for f in mh["gmb_reduce"].values())
    assert magnitude_headlines(diag["epochs"], epoch=1)["gmb_reduce"] == pytest.approx(
        dict(zip(rows[rows["epoch"] == 1]["task"], rows[rows["epoch"] == 1]["value"]))
    )


@pytest.mark.parametrize(
    ("method", "params", "rho", "mode", "says"),
    [
        ("pmtrec", {}, 1.0, "entity_reduce", "per entity, reduce-only"),
        ("pmtrec-gmb", {}, 0.5, "side", "per side"),
        ("pmtrec-v2", {}, 0.0, "side", "GMB off"),
        ("pmtrec", {"rho": 0.0}, 0.0, "entity_reduce", "GMB off"),
        ("ew", {}, None, None, "no GMB"),
    ],
)
def test_gmb_setting_says_which_gmb_a_method_runs(method, params, rho, mode, says):
    from pmtrec_lab.reports.headlines import gmb_setting

    got = gmb_setting(method, params)
    assert (got["rho"], got["gmb_mode"]) == (rho, mode)
    assert says in got["gmb"] and method in got["gmb"]


def test_level_rounds_table_and_figure_follow_the_rounds_file():
    """PMTRec v4's level rounds (``level_selection.json``'s layout): one row per candidate with its
    scores per halving stage, the chosen level marked; a run without rounds gets a placeholder."""
    from pmtrec_lab.viz import is_missing, level_rounds_figure, level_rounds_table, missing_reason

    rounds = [
        {
            "epoch": 5,
            "metric": "meta ndcg@20",
            "branch_epochs": 6,
            "levels": {"rec": 1.0, "social:trust": 0.3},
            "groups": [
                {
                    "tasks": ["social:trust"],
                    "candidates": [1.0, 0.3, 0.1, 0.0],
                    "scores": [[0.10, 0.12, 0.09, 0.11], [None, 0.13, None, 0.12]],
                    "chosen": 0.3,
                }
            ],
        }
    ]
    table = level_rounds_table(rounds)
    assert list(table["level"]) == [1.0, 0.3, 0.1, 0.0]
    assert list(table["chosen"]) == [False, True, False, False]
    assert table["stage2"].isna().tolist() == [True, False, True, False]
    assert table.loc[1, "stage2"] == 0.13 and set(table["after_epoch"]) == {5}
    fig = level_rounds_figure(rounds)
    (bar,) = fig.data
    assert list(bar.x) == ["1", "0.3", "0.1", "0"] and list(bar.y) == [0.10, 0.12, 0.09, 0.11]
    assert bar.marker.color[1] != bar.marker.color[0]  # the chosen level stands out
    assert "6 after epoch 5" in fig.layout.title.text
    empty = level_rounds_figure([])
    assert is_missing(empty) and "level_select=true" in missing_reason(empty)


def test_aux_metrics_table_and_figure_read_the_run_files_layout():
    """The auxiliary tasks' metrics (``metrics.json``'s ``aux``, ``history.json``'s
    ``valid_aux/<task>/<metric>``); a run without them gets an empty table and a placeholder."""
    import pandas as pd

    from pmtrec_lab.viz import aux_metrics_over_epochs, aux_metrics_table, is_missing, missing_reason

    metrics = {
        "aux": {
            "valid": {"social:trust": {"auc": 0.81, "hit@10": 0.4}, "item_label:category": {"accuracy": 0.3}},
            "test": {"social:trust": {"auc": 0.79, "hit@10": 0.35}, "item_label:category": {"accuracy": 0.28}},  # noqa: E501
        }
    }
    table = aux_metrics_table(metrics)
    assert table.values.tolist() == [
        ["social:trust", "auc", 0.81, 0.79],
        ["social:trust", "hit@10", 0.4, 0.35],
        ["item_label:category", "accuracy", 0.3, 0.28],
    ]
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "valid_aux/social:trust/auc": [0.6, 0.7, 0.81], "valid/ndcg@20": [0.1, 0.2, 0.3]}
    )
    fig = aux_metrics_over_epochs(history, best_epoch=3)
    (line,) = fig.data
    assert line.name == "social:trust auc" and list(line.y) == [0.6, 0.7, 0.81]
    assert aux_metrics_table({}).empty
    empty = aux_metrics_over_epochs(history.drop(columns="valid_aux/social:trust/auc"))
    assert is_missing(empty) and "data.aux_holdout" in missing_reason(empty)
