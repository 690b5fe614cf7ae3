"""Paired significance tests over per-user metrics.

Protocol (``../shared/docs/pmtrec-method.md``): PMTRec is compared with the strongest baseline (by
validation NDCG@20) with a two-sided Wilcoxon signed-rank test over per-user test NDCG@20, each
user's value averaged over seeds (the split is fixed across seeds, so runs are paired by user).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def wilcoxon_paired(a: np.ndarray, b: np.ndarray, zero_method: str = "wilcox") -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples ``a`` and ``b`` (scipy.stats.wilcoxon).

    Returns ``{"statistic", "p_value", "n", "n_nonzero", "mean_diff"}`` with ``mean_diff`` the mean of
    ``a - b`` and ``n`` the number of pairs. When every difference is zero (identical methods, or no
    pairs) the test is undefined; it then reports statistic 0.0 and p_value 1.0 instead of raising.
    ``zero_method`` is passed to scipy (``"wilcox"`` drops zero differences, its default).
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape[0]} vs {y.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired samples must be finite (NaN or inf found)")
    diff = x - y
    n = int(diff.shape[0])
    n_nonzero = int(np.count_nonzero(diff))
    mean_diff = float(diff.mean()) if n else 0.0
    if n_nonzero == 0:
        return {"statistic": 0.0, "p_value": 1.0, "n": n, "n_nonzero": 0, "mean_diff": mean_diff}
    res = stats.wilcoxon(x, y, zero_method=zero_method, alternative="two-sided")
    p_value = float(res.pvalue)
    if not np.isfinite(p_value):
        p_value = 1.0
    return {
        "statistic": float(res.statistic),
        "p_value": min(p_value, 1.0),
        "n": n,
        "n_nonzero": n_nonzero,
        "mean_diff": mean_diff,
    }


def paired_per_user(frame_a: pd.DataFrame, frame_b: pd.DataFrame, metric: str, **kwargs) -> dict:
    """Wilcoxon test of ``metric`` between two per-user frames (``EvalResult.to_frame()``), paired by user.

    Only users present in both frames are compared; the result adds ``metric``, ``users_only_a`` and
    ``users_only_b`` (users dropped from the comparison) to :func:`wilcoxon_paired`'s dictionary.
    ``kwargs`` go to :func:`wilcoxon_paired`.
    """
    for name, frame in (("frame_a", frame_a), ("frame_b", frame_b)):
        if "user" not in frame.columns or metric not in frame.columns:
            raise ValueError(f"{name} needs columns 'user' and {metric!r}, has {list(frame.columns)}")
        if frame["user"].duplicated().any():
            raise ValueError(f"{name} has duplicate users; average over seeds first")
    merged = frame_a[["user", metric]].merge(frame_b[["user", metric]], on="user", suffixes=("_a", "_b"))
    out = wilcoxon_paired(merged[f"{metric}_a"].to_numpy(), merged[f"{metric}_b"].to_numpy(), **kwargs)
    out["metric"] = metric
    out["users_only_a"] = int(len(frame_a) - len(merged))
    out["users_only_b"] = int(len(frame_b) - len(merged))
    return out
