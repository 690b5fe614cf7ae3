"""The benefit map's statistics on planted data whose answers are known: benefit arithmetic, the
Spearman-Brown reliability, quantile bins, structure against its permutation floor, and the score
that gives no credit to a weight that only follows activity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pmtrec_lab.benefit.analysis import (
    benefit_per_seed,
    bootstrap_mean_ci,
    quantile_bins,
    reliability,
    score_weighting,
    structure,
    summarize,
)
from pmtrec_lab.benefit.measure import FULL, NONE_LEFT


def _entities(values: dict[tuple[str, int], np.ndarray], side: str = "user") -> pd.DataFrame:
    """A gathered table from {(role, seed): per-entity values}."""
    frames = []
    for (role, seed), v in values.items():
        frames.append(
            pd.DataFrame(
                {
                    "dataset": "toy",
                    "method": role,
                    "role": role,
                    "seed": seed,
                    "side": side,
                    "entity": np.arange(len(v)),
                    "value": v,
                    "pairs": 1,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_benefit_is_full_minus_the_run_without_the_task_per_seed_and_entity():
    ents = _entities(
        {
            (FULL, 0): np.array([0.5, 0.2, 0.0]),
            (FULL, 1): np.array([0.3, 0.2, 0.1]),
            ("social:trust", 0): np.array([0.1, 0.4, 0.0]),
            ("social:trust", 1): np.array([0.3, 0.0, 0.2]),
            (NONE_LEFT, 0): np.array([0.0, 0.0, 0.5]),  # seed 1 of single-task did not finish
        }
    )
    per_seed = benefit_per_seed(ents)
    social = per_seed[per_seed["task"] == "social:trust"].sort_values(["seed", "entity"])
    assert social["benefit"].to_numpy() == pytest.approx([0.4, -0.2, 0.0, 0.0, 0.2, -0.1])
    assert set(per_seed[per_seed["task"] == NONE_LEFT]["seed"]) == {0}
    summary = summarize(per_seed).set_index(["task", "entity"])
    assert summary.loc[("social:trust", 0), "benefit"] == pytest.approx(0.2)
    assert summary.loc[("social:trust", 1), "relative"] == 0  # -0.2 and +0.2
    assert summary.loc[("social:trust", 2), "relative"] == pytest.approx(-0.05 / 0.1)
    assert np.isnan(summary.loc[("all", 0), "relative"])  # single-task scored 0 there: undefined
    assert summary.loc[("all", 0), "seeds"] == 1
    # only the seeds asked for (benefit from seeds a weighting did not train on)
    assert (
        summarize(per_seed, seeds=[1]).set_index(["task", "entity"]).loc[("social:trust", 0), "benefit"] == 0
    )


@pytest.mark.parametrize("seeds,noise,expected", [(3, 1.0, 0.75), (2, 1.0, 2 / 3), (3, 0.5, 12 / 13)])
def test_reliability_is_the_spearman_brown_corrected_inter_seed_correlation(seeds, noise, expected):
    rng = np.random.default_rng(seeds)
    signal = rng.normal(size=20000)
    rows = []
    for s in range(seeds):
        b = signal + rng.normal(scale=noise, size=signal.size)
        rows.append(
            pd.DataFrame(
                {
                    "dataset": "toy",
                    "task": "t",
                    "side": "user",
                    "entity": np.arange(signal.size),
                    "seed": s,
                    "benefit": b,
                }
            )
        )
    table = reliability(pd.concat(rows)).iloc[0]
    # per-seed correlation var_s / (var_s + var_n); Spearman-Brown to the seed count
    assert table["pair_r"] == pytest.approx(1 / (1 + noise**2), abs=0.02)
    assert table["reliability"] == pytest.approx(expected, abs=0.02)
    assert table["seeds"] == seeds


def test_pure_noise_has_no_reliability():
    rng = np.random.default_rng(0)
    rows = [
        pd.DataFrame(
            {
                "dataset": "toy",
                "task": "t",
                "side": "user",
                "entity": np.arange(5000),
                "seed": s,
                "benefit": rng.normal(size=5000),
            }
        )
        for s in range(3)
    ]
    assert abs(reliability(pd.concat(rows)).iloc[0]["reliability"]) < 0.1


@pytest.mark.parametrize(
    "values,min_size",
    [
        (np.repeat([1, 2, 3, 50], [400, 30, 30, 40]), 50),  # heavy ties: small bins merge
        (np.arange(1000) % 97, 50),
        (np.random.default_rng(1).zipf(2.0, 3000), 100),
    ],
)
def test_quantile_bins_keep_equal_values_together_and_hold_enough_entities(values, min_size):
    codes = quantile_bins(values, n_bins=5, min_size=min_size)
    counts = np.bincount(codes)
    assert counts.min() >= min_size
    for v in np.unique(values):
        assert len(np.unique(codes[values == v])) == 1
    # bins are ordered by the feature
    maxima = [values[codes == b].max() for b in range(codes.max() + 1)]
    minima = [values[codes == b].min() for b in range(codes.max() + 1)]
    assert all(hi < lo for hi, lo in zip(maxima[:-1], minima[1:], strict=True))


def test_fewer_entities_than_a_bin_give_one_bin():
    assert set(quantile_bins(np.arange(30), n_bins=5, min_size=50)) == {0}


def _planted_map(n: int, effect: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    degree = rng.zipf(1.8, n).clip(max=500)
    benefit = effect * (np.log(degree) < 1.0) - effect * (np.log(degree) >= 2.0) + rng.normal(size=n)
    the_map = pd.DataFrame(
        {
            "dataset": "toy",
            "task": "t",
            "side": "user",
            "entity": np.arange(n),
            "benefit": benefit,
            "relative": benefit,
            "without": 1.0,
            "full": 1.0 + benefit,
        }
    )
    features = pd.DataFrame(
        {
            "side": "user",
            "entity": np.arange(n),
            "train_degree": degree,
            "link_degree": rng.integers(0, 5, n),
            "label_count": 1,
        }
    )
    rel = pd.DataFrame({"dataset": ["toy"], "task": ["t"], "side": ["user"], "reliability": [0.5]})
    return the_map, features, rel


def test_structure_finds_planted_degree_effects_and_not_unrelated_features():
    the_map, features, rel = _planted_map(4000, effect=1.0)
    table = structure(the_map, features, rel).set_index("feature")
    assert table.loc["train_degree", "r2"] > 5 * table.loc["train_degree", "r2_null_95"]
    assert table.loc["link_degree", "r2"] < table.loc["link_degree", "r2_null_95"] * 2
    assert "label_count" not in table.index  # constant: one bin, skipped
    null_map, features, rel = _planted_map(4000, effect=0.0, seed=1)
    null = structure(null_map, features, rel).set_index("feature")
    assert null.loc["train_degree", "r2"] < 3 * null.loc["train_degree", "r2_null_95"]


def test_a_weight_that_only_follows_degree_scores_nothing_and_one_that_follows_benefit_does():
    the_map, features, rel = _planted_map(6000, effect=1.0)
    rng = np.random.default_rng(3)
    degree = features["train_degree"].to_numpy()
    follows_degree = the_map[["dataset", "task", "side", "entity"]].assign(weight=-np.log(degree))
    follows_benefit = the_map[["dataset", "task", "side", "entity"]].assign(
        weight=the_map["benefit"] + rng.normal(scale=0.5, size=len(the_map))
    )
    by_degree = score_weighting(follows_degree, the_map, features, rel).iloc[0]
    by_benefit = score_weighting(follows_benefit, the_map, features, rel).iloc[0]
    assert by_degree["spearman"] > 0.2  # overall it correlates, through degree
    assert abs(by_degree["within_degree"]) < 0.1  # within degree bins: nothing
    assert by_benefit["within_degree"] > 0.6
    assert by_benefit["score"] == pytest.approx(by_benefit["within_degree"] / np.sqrt(0.5))


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_entities():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 100), rng.normal(1.0, 1.0, 10000)
    lo_s, hi_s = bootstrap_mean_ci(small)
    lo_l, hi_l = bootstrap_mean_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert np.isnan(bootstrap_mean_ci(np.zeros(0))[0])


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_users": 150, "num_items": 90}, {"seed": 3, "homophily": 0.5, "num_users": 500}],
)
def test_synthetic_release_is_unchanged_by_the_activity_settings_at_their_defaults(kwargs):
    """Digests of the release before ``activity_spread`` and ``mislabel_active`` existed."""
    import hashlib

    from pmtrec_lab.data.sources.synthetic import load_raw

    expected = {0: "7a1371aea60d0825", 1: "303651611e5ca6a2", 2: "fc4dcd6a3b934805"}
    cases = [{}, {"num_users": 150, "num_items": 90}, {"seed": 3, "homophily": 0.5, "num_users": 500}]
    raw = load_raw(**kwargs)
    h = hashlib.sha256()
    arrays = (
        raw.users,
        raw.items,
        *raw.user_relations["friends"],
        raw.labels["category"].label,
        raw.labels["community"].label,
    )
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    assert h.hexdigest()[:16] == expected[cases.index(kwargs)]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"activity_spread": -0.1}, "activity_spread must be >= 0"),
        ({"mislabel_active": 1.0}, r"mislabel_active must lie in \[0, 1\)"),
        ({"mislabel_active": -0.2}, r"mislabel_active must lie in \[0, 1\)"),
    ],
)
def test_synthetic_activity_settings_are_checked(kwargs, message):
    from pmtrec_lab.data.sources.synthetic import load_raw

    with pytest.raises(ValueError, match=message):
        load_raw(num_users=50, num_items=30, **kwargs)


def test_activity_spread_makes_cold_and_active_users_and_mislabels_only_the_active():
    from pmtrec_lab.data.sources.synthetic import load_raw

    plain = load_raw(num_users=900, num_items=200, interactions_per_user=12, num_communities=6)
    raw = load_raw(
        num_users=900,
        num_items=200,
        interactions_per_user=12,
        num_communities=6,
        activity_spread=1.0,
        mislabel_active=0.33,
    )
    rows = np.bincount(raw.users, minlength=900)
    assert rows.min() == 3 and rows.max() > 60 and abs(rows.mean() - 12) < 1.5
    changed = raw.labels["community"].label != plain.labels["community"].label
    # communities are drawn before activity, so the plain release holds the true ones
    active = np.argsort(rows, kind="stable")[-297:]
    assert not changed[np.setdiff1d(np.arange(900), active)].any()  # the cold two thirds keep theirs
    assert 0.6 < changed[active].mean() < 0.95  # random among 6: about 5/6 differ


@pytest.mark.parametrize("item_noise,expected", [(0.0, 1.0), (1.0, 0.5), (3.0, 0.1)])
def test_transfer_is_the_correlation_of_validation_and_test_benefit(item_noise, expected):
    """Benefit = an entity's own part (variance 1) + a part of its held-out items (variance
    item_noise^2, drawn anew for test): the correlation across splits is 1 / (1 + item_noise^2)."""
    from pmtrec_lab.benefit.analysis import transfer

    rng = np.random.default_rng(int(item_noise * 10))
    n = 20000
    own = rng.normal(size=n)

    def split_map(noise):
        return pd.DataFrame(
            {"dataset": "toy", "task": "t", "side": "user", "entity": np.arange(n), "benefit": own + noise}
        )

    valid = split_map(rng.normal(scale=item_noise, size=n))
    test = split_map(rng.normal(scale=item_noise, size=n))
    row = transfer(valid, test).iloc[0]
    assert row["entities"] == n
    assert row["pearson"] == pytest.approx(expected, abs=0.03)
