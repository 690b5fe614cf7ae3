"""Who benefits from which auxiliary task: the benefit map, its noise, its structure, and how well
a per-entity weighting follows it (issue "PMTRec v4", part 1).

Definitions (validation NDCG@20 of the selected epoch, per entity; items through the users whose
held-out items they are, ``eval.items``):

- ``benefit_x^k = m_x(EW, every task) - m_x(EW without task k)``, per seed, then the mean over
  seeds; ``relative`` = that mean over the left-out run's mean (NaN where that is 0). The task
  ``"all"`` is EW against single-task (every auxiliary task left out).
- **Reliability** of the seed-mean benefit: the mean correlation (Pearson, over entities) of the
  per-seed benefits of every pair of seeds (split halves of one seed each), corrected to the number
  of seeds ``S`` with Spearman-Brown, ``S r / (1 + (S - 1) r)``: the share of the seed-mean's
  variance across entities that is not seed noise.
- **Confidence intervals** of a mean benefit: percentile bootstrap over entities.
- **Structure**: benefit by bins of an entity feature (training degree, link degree, label count;
  quantile bins of at least 50 entities), and the share of the variance of the seed-mean benefit
  the bins explain (R^2) against the same with the bins permuted (the noise floor) and against the
  reliability (the most any feature could explain).
- **Score of a weighting**: within bins of training degree (so a weight that only follows
  activity earns nothing), the Spearman correlation of the weight of task k with benefit_x^k,
  averaged over bins by size, divided by the square root of the map's reliability. The benefit
  must come from seeds not used to train the weighting (:func:`benefit_per_seed` then
  :func:`summarize` on the other seeds).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pmtrec_lab.benefit.measure import FULL

__all__ = [
    "FEATURES",
    "benefit_per_seed",
    "bootstrap_mean_ci",
    "by_bins",
    "quantile_bins",
    "reliability",
    "score_weighting",
    "structure",
    "summarize",
    "transfer",
]

#: the entity features the structure is examined on (``measure.entity_features``)
FEATURES = ("train_degree", "link_degree", "label_count")
_KEY = ["dataset", "side", "entity"]


def benefit_per_seed(entities: pd.DataFrame) -> pd.DataFrame:
    """Per (task, side, entity, seed): ``full`` (EW's value), ``without`` (the value with the task
    left out; single-task for ``"all"``) and ``benefit`` = full - without. Only seeds where both
    runs finished and entities measured in both enter."""
    full = entities[entities["role"] == FULL][[*_KEY, "seed", "value", "pairs"]].rename(
        columns={"value": "full"}
    )
    frames = []
    for task in [r for r in entities["role"].unique() if r != FULL]:
        left = entities[entities["role"] == task][[*_KEY, "seed", "value"]].rename(
            columns={"value": "without"}
        )
        both = full.merge(left, on=[*_KEY, "seed"], how="inner")
        both.insert(1, "task", task)
        frames.append(both)
    if not frames:
        return pd.DataFrame(
            columns=["dataset", "task", "side", "entity", "seed", "full", "pairs", "without", "benefit"]
        )
    out = pd.concat(frames, ignore_index=True)
    out["benefit"] = out["full"] - out["without"]
    return out


def summarize(per_seed: pd.DataFrame, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """The map: per (dataset, task, side, entity) the means over ``seeds`` (default: all) of
    ``benefit``, ``full`` and ``without``, ``relative`` benefit and ``seeds`` counted."""
    frame = per_seed if seeds is None else per_seed[per_seed["seed"].isin(list(seeds))]
    grouped = frame.groupby(["dataset", "task", "side", "entity"], sort=True)
    out = grouped[["benefit", "full", "without"]].mean()
    out["seeds"] = grouped["seed"].nunique()
    out["relative"] = out["benefit"] / out["without"].where(out["without"] != 0)
    return out.reset_index()


def reliability(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, task, side): ``seeds``, ``entities`` (measured in every seed), ``pair_r`` (the
    mean inter-seed correlation of benefit) and ``reliability`` (Spearman-Brown to ``seeds``)."""
    rows = []
    for (dataset, task, side), frame in per_seed.groupby(["dataset", "task", "side"], sort=True):
        wide = frame.pivot_table(index="entity", columns="seed", values="benefit").dropna()
        s = wide.shape[1]
        r = np.nan
        if s >= 2 and len(wide) >= 3:
            corr = np.corrcoef(wide.to_numpy().T)
            r = float(corr[np.triu_indices(s, 1)].mean())
        rel = s * r / (1 + (s - 1) * r) if np.isfinite(r) else np.nan
        rows.append(
            {
                "dataset": dataset,
                "task": task,
                "side": side,
                "seeds": s,
                "entities": len(wide),
                "pair_r": r,
                "reliability": rel,
            }
        )
    return pd.DataFrame(rows)


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling entities)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def quantile_bins(values: np.ndarray, n_bins: int = 5, min_size: int = 50) -> np.ndarray:
    """Bin codes 0..B-1 of ``values`` by quantiles (equal values always share a bin), with adjacent
    bins merged until each holds at least ``min_size`` entities (one bin when there are fewer)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
    codes = np.searchsorted(edges, values, side="left")
    counts = np.bincount(codes, minlength=len(edges) + 1)
    # merge each too-small bin into the next one (the last into the previous one)
    groups, current, size = np.zeros_like(counts), 0, 0
    for b, n in enumerate(counts):
        groups[b] = current
        size += n
        if size >= min_size:
            current, size = current + 1, 0
    if size and current > 0:  # a small remainder joins the last full bin
        groups[groups == current] = current - 1
    return np.unique(groups[codes], return_inverse=True)[1]


def by_bins(
    benefit_map: pd.DataFrame,
    features: pd.DataFrame,
    feature: str,
    n_bins: int = 5,
    min_size: int = 50,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """Per (dataset, task, side, bin of ``feature``): entities, the feature's range, mean benefit
    with its bootstrap interval, and mean relative benefit."""
    merged = benefit_map.merge(features, on=["side", "entity"], how="left")
    rows = []
    for (dataset, task, side), frame in merged.groupby(["dataset", "task", "side"], sort=True):
        codes = quantile_bins(frame[feature].to_numpy(), n_bins, min_size)
        for b in range(codes.max() + 1 if len(codes) else 0):
            part = frame[codes == b]
            lo, hi = bootstrap_mean_ci(part["benefit"].to_numpy(), n_boot)
            rows.append(
                {
                    "dataset": dataset,
                    "task": task,
                    "side": side,
                    "feature": feature,
                    "bin": b,
                    "entities": len(part),
                    "low": part[feature].min(),
                    "high": part[feature].max(),
                    "benefit": part["benefit"].mean(),
                    "ci_low": lo,
                    "ci_high": hi,
                    "relative": part["relative"].replace([np.inf, -np.inf], np.nan).mean(),
                    "without": part["without"].mean(),
                }
            )
    return pd.DataFrame(rows)


def _spearman(a, b) -> float:
    """Spearman's rank correlation; NaN (without a warning) when either side is constant."""
    ra = pd.Series(np.asarray(a, dtype=np.float64)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=np.float64)).rank().to_numpy()
    if ra.size < 3 or ra.std() == 0 or rb.std() == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _r2(values: np.ndarray, codes: np.ndarray) -> float:
    total = ((values - values.mean()) ** 2).sum()
    if total == 0:
        return np.nan
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=values) / np.maximum(counts, 1)
    return float((counts * (means - values.mean()) ** 2).sum() / total)


def structure(
    benefit_map: pd.DataFrame,
    features: pd.DataFrame,
    reliabilities: pd.DataFrame,
    feature_names: Sequence[str] = FEATURES,
    n_bins: int = 5,
    min_size: int = 50,
    permutations: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (dataset, task, side, feature): ``bins``, ``r2`` (variance of the seed-mean benefit the
    bins explain), ``r2_null`` and ``r2_null_95`` (mean and 95th percentile with the bins permuted),
    ``reliability`` and ``spearman`` (benefit against the raw feature). A feature that is constant
    on a side (one bin) is skipped."""
    merged = benefit_map.merge(features, on=["side", "entity"], how="left")
    rel = reliabilities.set_index(["dataset", "task", "side"])["reliability"]
    rng = np.random.default_rng(seed)
    rows = []
    for (dataset, task, side), frame in merged.groupby(["dataset", "task", "side"], sort=True):
        values = frame["benefit"].to_numpy(np.float64)
        for feature in feature_names:
            codes = quantile_bins(frame[feature].to_numpy(), n_bins, min_size)
            if codes.max(initial=0) == 0:
                continue
            null = np.array([_r2(values, rng.permutation(codes)) for _ in range(permutations)])
            rows.append(
                {
                    "dataset": dataset,
                    "task": task,
                    "side": side,
                    "feature": feature,
                    "bins": int(codes.max() + 1),
                    "r2": _r2(values, codes),
                    "r2_null": float(np.nanmean(null)),
                    "r2_null_95": float(np.nanquantile(null, 0.95)),
                    "reliability": float(rel.get((dataset, task, side), np.nan)),
                    "spearman": _spearman(values, frame[feature]),
                }
            )
    return pd.DataFrame(rows)


def score_weighting(
    weights: pd.DataFrame,
    benefit_map: pd.DataFrame,
    features: pd.DataFrame,
    reliabilities: pd.DataFrame,
    n_bins: int = 20,
    min_size: int = 50,
) -> pd.DataFrame:
    """How well per-entity weights follow the map. ``weights``: columns ``dataset``, ``task``,
    ``side``, ``entity``, ``weight``. Per (dataset, task, side): ``entities``, ``spearman`` (over
    all entities), ``within_degree`` (the bin-size-weighted mean of the Spearman correlation within
    bins of training degree), ``reliability`` and ``score`` = within_degree / sqrt(reliability)
    (NaN where the reliability is not positive)."""
    merged = weights.merge(benefit_map, on=["dataset", "task", "side", "entity"], how="inner")
    merged = merged.merge(features, on=["side", "entity"], how="left")
    rel = reliabilities.set_index(["dataset", "task", "side"])["reliability"]
    rows = []
    for (dataset, task, side), frame in merged.groupby(["dataset", "task", "side"], sort=True):
        codes = quantile_bins(frame["train_degree"].to_numpy(), n_bins, min_size)
        within, total = 0.0, 0
        for b in range(codes.max() + 1 if len(codes) else 0):
            part = frame[codes == b]
            r = _spearman(part["weight"], part["benefit"])
            if np.isfinite(r):
                within += r * len(part)
                total += len(part)
        r_within = within / total if total else np.nan
        reliab = float(rel.get((dataset, task, side), np.nan))
        rows.append(
            {
                "dataset": dataset,
                "task": task,
                "side": side,
                "entities": len(frame),
                "spearman": _spearman(frame["weight"], frame["benefit"]),
                "within_degree": r_within,
                "reliability": reliab,
                "score": r_within / np.sqrt(reliab) if reliab > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def transfer(valid_map: pd.DataFrame, test_map: pd.DataFrame) -> pd.DataFrame:
    """Does an entity's validation benefit carry over to its other held-out items? Per (dataset,
    task, side): ``entities`` measured on both splits, and the Pearson and Spearman correlations of
    the seed-mean benefit on validation with the same on test.

    The seeds share one split, so the reliability says how repeatable benefit is *on the same
    held-out items*; a weighting learned from training data can only use the part that carries over
    to new items, which this measures. Test numbers enter no choice (``docs/pmtrec-method.md``)."""
    key = ["dataset", "task", "side", "entity"]
    both = valid_map[[*key, "benefit"]].merge(
        test_map[[*key, "benefit"]], on=key, suffixes=("_valid", "_test")
    )
    rows = []
    for (dataset, task, side), frame in both.groupby(["dataset", "task", "side"], sort=True):
        v, t = frame["benefit_valid"].to_numpy(), frame["benefit_test"].to_numpy()
        pearson = (
            float(np.corrcoef(v, t)[0, 1]) if len(frame) >= 3 and v.std() > 0 and t.std() > 0 else np.nan
        )
        rows.append(
            {
                "dataset": dataset,
                "task": task,
                "side": side,
                "entities": len(frame),
                "pearson": pearson,
                "spearman": _spearman(v, t),
            }
        )
    return pd.DataFrame(rows)
