"""Figures comparing methods: a summary table (one row per dataset x method) drawn as bars.

Input: ``summary`` tables as ``pmtrec_lab.compare.summarize`` and
``pmtrec_lab.reports.small_grid.summarize_grid`` write them (``dataset, method, seeds,
valid_ndcg20, recall20_mean, recall20_std, ndcg20_mean, ndcg20_std, ...``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pmtrec_lab.viz._common import missing_figure, require_columns

__all__ = ["ablation_deltas", "ablation_figure", "method_comparison", "tuning_curve"]

_PMTREC_COLOR = "#d62728"
_ABLATION_COLOR = "#ff9896"
_BASELINE_COLOR = "#1f77b4"


def _color(method: str) -> str:
    if method == "pmtrec":
        return _PMTREC_COLOR
    if method.startswith("pmtrec") or method in ("ew-align", "ew-gmb"):
        return _ABLATION_COLOR
    return _BASELINE_COLOR


def method_comparison(summary: pd.DataFrame, metric: str = "ndcg20", title: str | None = None) -> go.Figure:
    """Mean test ``metric`` (``ndcg20`` or ``recall20``) per method with +-1 std error bars over
    seeds, one panel per dataset, methods sorted by the mean. PMTRec red, its ablations pink,
    baselines blue."""
    if summary is None or summary.empty:
        return missing_figure("No comparison results to plot.", title or "Method comparison")
    mean, std = f"{metric}_mean", f"{metric}_std"
    require_columns(summary, ("dataset", "method", mean), "summary table")
    datasets = list(dict.fromkeys(summary["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets)
    for i, dataset in enumerate(datasets, 1):
        part = summary[summary["dataset"] == dataset].sort_values(mean)
        err = part[std].fillna(0.0).to_numpy() if std in part.columns else np.zeros(len(part))
        fig.add_trace(
            go.Bar(
                x=part["method"].tolist(),
                y=part[mean].tolist(),
                error_y={"type": "data", "array": err.tolist(), "visible": True},
                marker_color=[_color(m) for m in part["method"]],
                text=[f"{v:.4f}" for v in part[mean]],
                textposition="outside",
                showlegend=False,
                hovertemplate="%{x}<br>mean %{y:.4f}<extra></extra>",
            ),
            row=1,
            col=i,
        )
    label = {"ndcg20": "NDCG@20", "recall20": "Recall@20"}.get(metric, metric)
    fig.update_yaxes(title_text=f"test {label} (mean over seeds)", col=1)
    fig.update_layout(title=title or f"Test {label} by method", height=440)
    return fig


def ablation_deltas(summary: pd.DataFrame, metric: str = "ndcg20", reference: str = "pmtrec") -> pd.DataFrame:
    """Per dataset, each other method's mean ``metric`` minus ``reference``'s: ``dataset, method,
    delta`` (negative: the method is worse than the reference)."""
    cols = ["dataset", "method", "delta"]
    if summary is None or summary.empty:
        return pd.DataFrame(columns=cols)
    mean = f"{metric}_mean"
    rows = []
    for dataset, part in summary.groupby("dataset", sort=False):
        ref = part.loc[part["method"] == reference, mean]
        if ref.empty:
            continue
        for _, r in part[part["method"] != reference].iterrows():
            rows.append({"dataset": dataset, "method": r["method"], "delta": float(r[mean] - ref.iloc[0])})
    return pd.DataFrame(rows, columns=cols)


def ablation_figure(summary: pd.DataFrame, metric: str = "ndcg20", reference: str = "pmtrec") -> go.Figure:
    """Each method's mean test ``metric`` minus ``reference``'s (horizontal bars per dataset)."""
    d = ablation_deltas(summary, metric, reference)
    if d.empty:
        return missing_figure(f"No {reference!r} rows to compare against.", f"Difference to {reference}")
    fig = go.Figure()
    for dataset, part in d.groupby("dataset", sort=False):
        fig.add_trace(
            go.Bar(
                y=part["method"].tolist(),
                x=part["delta"].tolist(),
                orientation="h",
                name=str(dataset),
                hovertemplate="%{y}: %{x:+.4f}<extra></extra>",
            )
        )
    fig.add_vline(x=0, line_color="black")
    fig.update_layout(
        title=f"Test {metric} minus {reference}'s (negative: worse than {reference})",
        xaxis_title=f"delta {metric}",
        barmode="group",
        height=120 + 40 * max(1, d["method"].nunique()),
    )
    return fig


def tuning_curve(curves: pd.DataFrame) -> go.Figure:
    """Per method (one panel per dataset): the best validation NDCG@20 among the first n trials of
    its tuning study, against n (``tune.tuning_curves``): a curve still rising at the last trial
    says the budget did not suffice."""
    if curves is None or curves.empty:
        return missing_figure("no tuning study (trials.csv) found for this grid")
    require_columns(curves, ["dataset", "method", "trials", "best_so_far"], "tuning curves")
    datasets = list(dict.fromkeys(curves["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets, shared_yaxes=False)
    for col, dataset in enumerate(datasets, start=1):
        part = curves[curves["dataset"] == dataset]
        for method, m in part.groupby("method", sort=False):
            fig.add_trace(
                go.Scatter(
                    x=m["trials"], y=m["best_so_far"], mode="lines+markers", name=method,
                    legendgroup=method, showlegend=col == 1, line={"color": _color(method)},
                ),
                row=1, col=col,
            )  # fmt: skip
        fig.update_xaxes(title_text="trials", row=1, col=col)
    fig.update_yaxes(title_text="best validation NDCG@20 so far", row=1, col=1)
    fig.update_layout(title="Tuning: best validation NDCG@20 against the number of trials", height=380)
    return fig
