"""PMTRec v3 diagnostics (docs/pmtrec-method.md, "PMTRec v3"): the signal-frequency probe that
notebook 02 shows, and the focusing share and GMB factors the runs record."""

from __future__ import annotations

import numpy as np
import pytest

from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.train import train
from pmtrec_lab.train.diagnostics import decile_spearman, deciles_of
from pmtrec_lab.train.run import load_diagnostics

SYN = {"num_users": 600, "num_items": 300, "interactions_per_user": 14}
BASE = {"dataset": "synthetic", "loader_args": SYN, "k_core": 2, "dim": 16, "epochs": 2, "lr": 0.01}


def test_decile_spearman_on_planted_data():
    rng = np.random.default_rng(0)
    count = rng.integers(1, 6, 400).astype(float)
    decile = deciles_of(rng.random(400))
    assert decile_spearman(count * 2.0 + 0.1, count, decile) == pytest.approx(1.0)
    assert decile_spearman(-count, count, decile) == pytest.approx(-1.0)
    assert abs(decile_spearman(rng.random(400), count, decile)) < 0.15
    assert np.isnan(decile_spearman(rng.random(400), np.ones(400), decile))  # counts do not vary
    # within deciles: a signal that follows only the decile (activity) is not counted against it
    activity = rng.integers(1, 50, 400).astype(float)
    assert abs(decile_spearman(activity, count, deciles_of(activity))) < 0.2
    assert deciles_of(np.arange(100.0)).tolist() == np.repeat(np.arange(10), 10).tolist()


def _loop_reference(signal, count, decile):
    """The former loop: scipy's spearmanr per decile, size-weighted."""
    from scipy.stats import spearmanr

    total, weight = 0.0, 0
    for d in np.unique(decile):
        sel = decile == d
        if sel.sum() < 10 or np.ptp(count[sel]) == 0 or np.ptp(signal[sel]) == 0:
            continue
        rho = spearmanr(signal[sel], count[sel]).statistic
        if np.isfinite(rho):
            total += float(rho) * int(sel.sum())
            weight += int(sel.sum())
    return total / weight if weight else float("nan")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_decile_spearman_matches_scipy_per_decile_with_ties_and_skipped_deciles(seed):
    rng = np.random.default_rng(seed)
    n = 700
    decile = rng.integers(0, 10, n)
    count = rng.integers(1, 4, n).astype(float)  # many ties
    signal = np.round(rng.normal(size=n) + 0.3 * count, 1)  # ties too, and a real correlation
    count[decile == 3] = 2.0  # a decile with constant counts: skipped
    signal[decile == 5] = 0.7  # and one with a constant signal
    decile[:5] = 11  # a decile of 5 entities: skipped
    got, want = decile_spearman(signal, count, decile), _loop_reference(signal, count, decile)
    assert got == want and 0.05 < got < 0.6  # bit for bit


def _epochs(tmp_path, name, **params):
    cfg = notebook_config(**BASE, method="pmtrec", method_params=params, batch_size=1024)
    train(cfg, tmp_path / name)
    return load_diagnostics(tmp_path / name)["epochs"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("v3diag")
    return {
        "raw": _epochs(root, "raw", rho=0.0),  # v2's signal (GMB off)
        "fitted": _epochs(root, "fitted", norm_mode="fitted", focus_everywhere=True, rho=0.0),
        "reduce": _epochs(root, "reduce", gmb_mode="entity_reduce", rho=1.0),
    }


def _metric(df, metric):
    return df[df.metric == metric]


def test_count_spearman_is_recorded_and_the_fitted_signal_is_free_of_frequency(runs):
    raw = _metric(runs["raw"], "count_spearman")
    fitted = _metric(runs["fitted"], "count_spearman")
    assert {("rec", "user"), ("rec", "item")} <= set(zip(raw.task, raw.side))
    assert raw.value.between(-1, 1).all()
    first = raw[(raw.epoch == 1) & (raw.task == "rec")].value
    assert (first > 0.3).all()  # v2's raw norm follows the in-batch count
    f_first = fitted[(fitted.epoch == 1) & (fitted.task == "rec")].value
    assert (f_first.abs() < first.abs()).all() and (f_first.abs() < 0.2).all()
    exps = _metric(runs["fitted"], "norm_exponent")
    rec = exps[(exps.task == "rec")].value
    assert rec.between(0.2, 2.0).all()  # near 1/2 early in training


def test_focus_share_reaches_more_with_focusing_everywhere(runs):
    v2 = _metric(runs["raw"], "focus_share")
    v3 = _metric(runs["fitted"], "focus_share")
    assert (v2[v2.task == "rec"].value == 1.0).all()  # the main task always has its gradient
    aux = sorted(set(v2.task) - {"rec"})
    assert aux, "the synthetic dataset has auxiliary tasks"
    last = v3.epoch.max()
    for task in aux:
        a = float(v2[(v2.task == task) & (v2.epoch == last)].value.iloc[0])
        b = float(v3[(v3.task == task) & (v3.epoch == last)].value.iloc[0])
        assert b >= a and b > 0.9, (task, a, b)


def test_gmb_reduce_factors_are_recorded_and_never_above_one(runs):
    red = _metric(runs["reduce"], "gmb_reduce")
    assert len(red) and red.value.between(0, 1 + 1e-9).all()
    assert (red[red.task == "rec"].value == 1.0).all()
    assert _metric(runs["raw"], "gmb_reduce").empty
