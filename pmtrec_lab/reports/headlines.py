"""The headline values each report notebook records (one ``record(...)`` call per notebook).

Computed here, not in the notebooks, so tests can check them and notebooks stay thin. Every
function returns a flat-ish dict of JSON scalars (small dicts keyed ``"<side>/<task>"``), the
form :func:`pmtrec_lab.reports.record` accepts.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pmtrec_lab.train import Run
from pmtrec_lab.viz.gradients import conflict_summary, magnitude_summary
from pmtrec_lab.viz.weights import mean_task_weights, weight_activity_correlation

__all__ = [
    "conflict_headlines",
    "effective_pmtrec_params",
    "grid_headlines",
    "magnitude_headlines",
    "train_headlines",
    "weight_headlines",
]


def _f(x: Any) -> float | None:
    """A float, or None for missing/NaN (so records stay strict JSON with a clear 'absent')."""
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else v


def train_headlines(run: Run, metric: str = "ndcg@20") -> dict[str, Any]:
    """Test/validation metric, best epoch, epochs run, training seconds, per-activity-group test metric."""
    m = run.metrics
    groups = {
        f"{grouping}/{level}": _f(v.get(metric))
        for grouping, levels in (run.groups or {}).items()
        for level, v in levels.items()
    }
    return {
        "run": run.path.name,
        "dataset": run.config.data.name,
        "method": run.config.method.name,
        f"test_{metric}": _f(m.get("test", {}).get(metric)),
        "test_recall@20": _f(m.get("test", {}).get("recall@20")),
        f"valid_{metric}": _f(m.get("valid", {}).get(metric)),
        "best_epoch": m.get("best_epoch"),
        "epochs_run": m.get("epochs_run"),
        "train_seconds": _f(m.get("seconds")),
        f"groups_{metric}": groups,
    }


def weight_headlines(
    entity_weights: pd.DataFrame, activity: pd.DataFrame, epoch: int | None = None
) -> dict[str, Any]:
    """Mean weight per (side, task), its spread, and Spearman correlations with activity/social degree."""
    mw = mean_task_weights(entity_weights, epoch)
    if mw.empty:
        return {"weights_recorded": False}
    corr = weight_activity_correlation(entity_weights, activity, epoch)
    chosen = int(entity_weights["epoch"].max()) if epoch is None else int(epoch)
    return {
        "weights_recorded": True,
        "weight_epoch": chosen,
        "mean_weight": {f"{r.side}/{r.task}": _f(r.mean) for r in mw.itertuples()},
        "weight_std": {f"{r.side}/{r.task}": _f(r.std) for r in mw.itertuples()},
        "spearman_vs_activity": {
            f"{r.side}/{r.task}": _f(r.spearman) for r in corr[corr["against"] == "activity"].itertuples()
        },
        "spearman_vs_social_degree": {
            f"{r.side}/{r.task}": _f(r.spearman)
            for r in corr[corr["against"] == "social_degree"].itertuples()
        },
    }


def conflict_headlines(epochs_table: pd.DataFrame, epoch: int | None = None) -> dict[str, Any]:
    """Raw conflict fraction per auxiliary (side, task) and the combined gradient's per side."""
    cs = conflict_summary(epochs_table, epoch)
    raw = cs[cs["task"] != "combined"]
    comb = cs[cs["task"] == "combined"]
    return {
        "conflict_fraction": {f"{r.side}/{r.task}": _f(r.conflict_fraction) for r in raw.itertuples()},
        "conflict_fraction_combined": {r.side: _f(r.conflict_fraction) for r in comb.itertuples()},
        "mean_conflict_fraction": _f(raw["conflict_fraction"].mean()) if not raw.empty else None,
    }


def effective_pmtrec_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters ``method`` actually runs with: defaults < preset overrides < given
    ``params``, validated (:func:`pmtrec_lab.mtl.resolve_params`, the one resolution the run
    cache, the explorer and the comparison tables use too)."""
    from pmtrec_lab.mtl import resolve_params

    return resolve_params(method, params)


def magnitude_headlines(
    epochs_table: pd.DataFrame, factor: float = 2.0, epoch: int | None = None
) -> dict[str, Any]:
    """Magnitude ratios to the main task before/after GMB per (side, task), and which dominate."""
    ms = magnitude_summary(epochs_table, epoch=epoch, factor=factor)
    return {
        "norm_ratio_before": {f"{r.side}/{r.task}": _f(r.before) for r in ms.itertuples()},
        "norm_ratio_after": {f"{r.side}/{r.task}": _f(r.after) for r in ms.itertuples()},
        "dominating_without_gmb": [f"{r.side}/{r.task}" for r in ms.itertuples() if r.verdict == "dominates"],
        "vanishing_without_gmb": [f"{r.side}/{r.task}" for r in ms.itertuples() if r.verdict == "vanishes"],
    }


def grid_headlines(tables: dict[str, pd.DataFrame], source: str) -> dict[str, Any]:
    """What a comparison notebook records: where the tables came from, methods/datasets covered,
    per dataset the strongest baseline and PMTRec's Wilcoxon test against it."""
    summary = tables.get("summary")
    if summary is None or summary.empty:
        return {"results_found": False, "source": source}
    out: dict[str, Any] = {
        "results_found": True,
        "source": source,
        "datasets": sorted(summary["dataset"].unique().tolist()),
        "methods": list(dict.fromkeys(summary["method"].tolist())),
        "test_ndcg@20": {f"{r.dataset}/{r.method}": _f(r.ndcg20_mean) for r in summary.itertuples()},
    }
    sb = tables.get("strongest_baseline")
    if sb is not None and not sb.empty:
        out["strongest_baseline"] = {r.dataset: r.baseline for r in sb.itertuples()}
    sig = tables.get("significance")
    if sig is not None and not sig.empty:
        out["wilcoxon"] = {
            r.dataset: {
                "baseline": r.baseline,
                "p_value": _f(r.p_value),
                "mean_diff": _f(r.mean_diff),
                "n": int(r.n),
            }
            for r in sig.itertuples()
        }
    return out
