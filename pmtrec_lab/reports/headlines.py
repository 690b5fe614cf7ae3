"""The headline values each report notebook records (one ``record(...)`` call per notebook).

Computed here, not in the notebooks, so tests can check them and notebooks stay thin. Every
function returns a flat-ish dict of JSON scalars (small dicts keyed ``"<side>/<task>"``), the
form :func:`pmtrec_lab.reports.record` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pmtrec_lab.mtl import MethodParams, resolve_params
from pmtrec_lab.train import Run
from pmtrec_lab.viz.gradients import conflict_summary, magnitude_summary
from pmtrec_lab.viz.weights import mean_task_weights, weight_activity_correlation

__all__ = [
    "conflict_headlines",
    "effective_pmtrec_params",
    "gmb_reduce_factors",
    "gmb_setting",
    "grid_headlines",
    "magnitude_headlines",
    "side_gmb_headlines",
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


def effective_pmtrec_params(method: str, params: Mapping[str, Any] | MethodParams | None) -> dict[str, Any]:
    """The hyper-parameters ``method`` actually runs with, as a plain dict. ``params``: a run's
    typed parameters (``run.config.method.resolved``, resolved when its configuration loaded,
    taken as they are), or given parameters, resolved here (defaults < preset overrides < given,
    :func:`pmtrec_lab.mtl.resolve_params`, the one resolution of parameters outside a configuration)."""
    if isinstance(params, MethodParams):
        return params.as_dict()
    return resolve_params(method, params or {})


def gmb_setting(method: str, params: Mapping[str, Any] | MethodParams | None = None) -> dict[str, Any]:
    """Which Gradient Magnitude Balancing ``method`` runs with ``params``: ``rho``, ``gmb_mode``
    (None for a method without GMB) and ``gmb``, a sentence saying it, for notebook 04's reader.

    PMTRec's default (v3) is per entity and reduce-only (``entity_reduce``): it leaves the
    per-side magnitude ratios as they are, so a reader must be told where its effect shows.
    """
    resolved = effective_pmtrec_params(method, params)
    rho, mode = resolved.get("rho"), resolved.get("gmb_mode")
    if rho is None:
        text = f"{method} has no GMB (not a PMTRec-style weighting): the GMB panels stay empty."
    elif float(rho) == 0:
        text = f"{method} runs with GMB off (rho = 0): the panels show the magnitudes unbalanced."
    elif mode == "entity_reduce":
        text = (
            f"{method} balances per entity, reduce-only (gmb_mode=entity_reduce, rho={float(rho):g}, "
            f"gmb_c={float(resolved.get('gmb_c', 1.0)):g}): an entity's auxiliary gradient is scaled down "
            "towards gmb_c times its own moving-average main-task magnitude, never up. The per-side "
            "ratios stay as they are (after = before); its effect is the reduce factor."
        )
    else:
        text = (
            f"{method} balances per side (gmb_mode={mode}, rho={float(rho):g}): each auxiliary task's "
            "magnitude on a side is moved towards the main task's there (after: closer to 1)."
        )
    return {"rho": None if rho is None else float(rho), "gmb_mode": mode if rho is not None else None, "gmb": text}


def gmb_reduce_factors(epochs_table: pd.DataFrame, epoch: int | None = None) -> dict[str, float | None]:
    """The mean reduce-only GMB factor per task at ``epoch`` (default: the last recorded; 1: never
    reduced), from ``epochs.parquet``'s ``gmb_reduce`` rows; {} when the run recorded none."""
    if epochs_table is None or epochs_table.empty or "metric" not in epochs_table:
        return {}
    rows = epochs_table[epochs_table["metric"] == "gmb_reduce"]
    if rows.empty:
        return {}
    chosen = int(rows["epoch"].max()) if epoch is None else int(epoch)
    return {str(r.task): _f(r.value) for r in rows[rows["epoch"] == chosen].itertuples()}


def magnitude_headlines(
    epochs_table: pd.DataFrame, factor: float = 2.0, epoch: int | None = None
) -> dict[str, Any]:
    """Magnitude ratios to the main task before/after GMB per (side, task), which dominate, and
    the reduce-only GMB's mean factor per task (``gmb_reduce``; {} without it)."""
    ms = magnitude_summary(epochs_table, epoch=epoch, factor=factor)
    return {
        "norm_ratio_before": {f"{r.side}/{r.task}": _f(r.before) for r in ms.itertuples()},
        "norm_ratio_after": {f"{r.side}/{r.task}": _f(r.after) for r in ms.itertuples()},
        "dominating_without_gmb": [f"{r.side}/{r.task}" for r in ms.itertuples() if r.verdict == "dominates"],
        "vanishing_without_gmb": [f"{r.side}/{r.task}" for r in ms.itertuples() if r.verdict == "vanishes"],
        "gmb_reduce": gmb_reduce_factors(epochs_table, epoch),
    }


def side_gmb_headlines(run: Run, factor: float = 2.0, prefix: str = "side_gmb") -> dict[str, Any]:
    """What notebook 04 records of the per-side GMB run it shows beside the report's run, each key
    prefixed ``prefix``: the run, its method, ``rho``, and its per-side magnitude ratios before
    and after balancing."""
    method = run.config.method.name
    setting = gmb_setting(method, run.config.method.resolved)
    ratios = magnitude_headlines(run.diagnostics()["epochs"], factor=factor)
    return {
        f"{prefix}_run": run.path.name,
        f"{prefix}_method": method,
        f"{prefix}_rho": setting["rho"],
        f"{prefix}_norm_ratio_before": ratios["norm_ratio_before"],
        f"{prefix}_norm_ratio_after": ratios["norm_ratio_after"],
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
