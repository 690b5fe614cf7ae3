"""Figures of one training run: learning curves, test metrics, per-group metrics.

Inputs are the tables ``pmtrec_lab.train.load_run`` returns (``Run.history``, ``Run.metrics``,
``Run.groups``); every function returns a plain ``go.Figure`` (never a FigureWidget, whose saved
widget state would bloat executed notebooks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pmtrec_lab.viz._common import missing_figure, task_colors

__all__ = [
    "compare_learning_curves",
    "compare_test_metrics",
    "group_metrics_figure",
    "group_metrics_table",
    "learning_curves",
    "metrics_bar",
    "metrics_table",
]


def learning_curves(
    history: pd.DataFrame, metric: str = "ndcg@20", best_epoch: int | None = None
) -> go.Figure:
    """Training losses per task (left) and the validation ``metric`` (right) over epochs.

    ``history`` has ``epoch``, ``loss/<task>`` and ``valid/<metric>`` columns (``Run.history``);
    each loss is divided by its first-epoch value so tasks with very different loss scales share
    one axis (hover shows the raw value). The TF schedule's ``beta`` is drawn on the right panel's
    second axis when present, and ``best_epoch`` (the selected epoch) as a dashed line.
    """
    if history is None or history.empty or "epoch" not in history.columns:
        return missing_figure("No training history in this run.", "Learning curves")
    loss_cols = [c for c in history.columns if c.startswith("loss/")]
    valid_col = f"valid/{metric}"
    has_beta = "beta" in history.columns and history["beta"].notna().any()
    first_epoch = int(history["epoch"].iloc[0])  # 1: epochs are counted from 1
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"Training loss (relative to epoch {first_epoch})", f"Validation {metric}"),
        specs=[[{}, {"secondary_y": True}]],
    )
    colors = task_colors(c.removeprefix("loss/") for c in loss_cols)
    for col in loss_cols:
        task = col.removeprefix("loss/")
        raw = history[col].astype(float)
        first = raw.iloc[0] if raw.iloc[0] not in (0.0,) else 1.0
        fig.add_trace(
            go.Scatter(
                x=history["epoch"],
                y=raw / first,
                customdata=raw,
                mode="lines+markers",
                name=task,
                legendgroup=task,
                line={"color": colors[task]},
                hovertemplate=f"{task}<br>epoch %{{x}}<br>loss %{{customdata:.4f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    if valid_col in history.columns:
        sub = history[["epoch", valid_col]].dropna()
        fig.add_trace(
            go.Scatter(
                x=sub["epoch"],
                y=sub[valid_col],
                mode="lines+markers",
                name=f"valid {metric}",
                line={"color": "black"},
            ),
            row=1,
            col=2,
        )
    if has_beta:
        fig.add_trace(
            go.Scatter(
                x=history["epoch"],
                y=history["beta"],
                mode="lines",
                name="beta (TF schedule)",
                line={"color": "gray", "dash": "dot"},
            ),
            row=1,
            col=2,
            secondary_y=True,
        )
        fig.update_yaxes(title_text="beta", row=1, col=2, secondary_y=True)
    if best_epoch is not None and best_epoch >= 0:
        fig.add_vline(x=best_epoch, line_dash="dash", line_color="green", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=f"loss / loss at epoch {first_epoch}", row=1, col=1)
    fig.update_yaxes(title_text=metric, row=1, col=2, secondary_y=False)
    fig.update_layout(title="Learning curves", height=400, legend={"orientation": "h", "y": -0.2})
    return fig


def compare_learning_curves(
    histories: Mapping[str, pd.DataFrame],
    metric: str = "ndcg@20",
    best_epochs: Mapping[str, int | None] | None = None,
    latest: str | None = None,
) -> go.Figure:
    """Several runs' learning curves on one figure, a color per run and every trace named by its
    key (the run's label, e.g. the explorer's setting), so ablations can be compared.

    Left: the main task's training loss (each history's first ``loss/`` column, the run's task
    order) relative to the run's first epoch; right: the validation ``metric``, its selected epoch
    (``best_epochs``) drawn as a star. The ``latest`` run is drawn thicker, the others thinner.
    Runs without a history are left out; none left: a placeholder.
    """
    usable = {
        label: h
        for label, h in histories.items()
        if h is not None and not h.empty and "epoch" in h.columns and any(c.startswith("loss/") for c in h)
    }
    if not usable:
        return missing_figure("No training history in these runs.", "Learning curves")
    titles = ("Main-task training loss (relative to epoch 1)", f"Validation {metric}")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    colors = task_colors(usable)
    valid_col = f"valid/{metric}"
    for label, history in usable.items():
        width = 3.5 if label == latest else 1.8
        style = {"color": colors[label], "width": width}
        loss_col = next(c for c in history.columns if c.startswith("loss/"))
        raw = history[loss_col].astype(float)
        first = raw.iloc[0] if raw.iloc[0] != 0.0 else 1.0
        fig.add_trace(
            go.Scatter(
                x=history["epoch"],
                y=raw / first,
                customdata=raw,
                mode="lines",
                name=label,
                legendgroup=label,
                showlegend=False,
                line=style,
                hovertemplate=f"{label}<br>epoch %{{x}}<br>{loss_col} %{{customdata:.4f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        if valid_col not in history.columns:
            continue
        sub = history[["epoch", valid_col]].dropna()
        best = (best_epochs or {}).get(label)
        fig.add_trace(
            go.Scatter(
                x=sub["epoch"],
                y=sub[valid_col],
                mode="lines+markers",
                name=label,
                legendgroup=label,
                line=style,
                marker={
                    "symbol": ["star" if e == best else "circle" for e in sub["epoch"]],
                    "size": [13 if e == best else 5 for e in sub["epoch"]],
                },
                hovertemplate=f"{label}<br>epoch %{{x}}<br>{metric} %{{y:.4f}}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="loss / loss at epoch 1", row=1, col=1)
    fig.update_yaxes(title_text=f"{metric} (star: selected epoch)", row=1, col=2)
    fig.update_layout(
        title=f"Learning curves of {len(usable)} run{'s' if len(usable) != 1 else ''}",
        height=440,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def compare_test_metrics(
    metrics: Mapping[str, Mapping[str, Any]], names: Sequence[str] = ("ndcg@20", "recall@20")
) -> go.Figure:
    """Test ``names`` of several runs (``Run.metrics`` by label) as grouped bars, one bar per run
    named by its label, so ablations can be compared; runs without test metrics are left out."""
    tested = {label: m.get("test") for label, m in metrics.items() if isinstance(m.get("test"), Mapping)}
    if not tested:
        return missing_figure("No test metrics in these runs (are they finished?).", "Test metrics")
    fig = go.Figure()
    colors = task_colors(tested)
    for label, test in tested.items():
        fig.add_trace(
            go.Bar(
                x=list(names),
                y=[test.get(n) for n in names],
                name=label,
                marker_color=colors[label],
                texttemplate="%{y:.4f}",
                textposition="outside",
                textfont={"size": 9},
            )
        )
    fig.update_layout(
        title="Test metrics (full ranking)",
        barmode="group",
        yaxis_title="value",
        height=400,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def metrics_table(metrics: Mapping[str, Any] | pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Metrics as a table: rows ``metric@K`` names (recall, ndcg, ...), columns K.

    ``metrics`` is ``Run.metrics`` (whose ``split`` entry is used), a flat ``{"ndcg@20": v}``
    dict, or an already tabular DataFrame (returned as is).
    """
    if isinstance(metrics, pd.DataFrame):
        return metrics
    flat = metrics.get(split, metrics) if isinstance(metrics.get(split), Mapping) else metrics
    rows: dict[str, dict[int, float]] = {}
    for key, value in flat.items():
        name, sep, k = str(key).partition("@")
        if not sep or not k.isdigit() or not isinstance(value, int | float):
            continue
        rows.setdefault(name, {})[int(k)] = float(value)
    table = pd.DataFrame(rows).T
    if table.empty:
        return table
    table = table[sorted(table.columns)]
    table.columns = [f"@{k}" for k in table.columns]
    table.index.name = "metric"
    return table


def metrics_bar(
    metrics: Mapping[str, Any] | pd.DataFrame, split: str = "test", title: str | None = None
) -> go.Figure:
    """Grouped bars of ranking metrics: one group per metric, one bar per cut-off K.

    Accepts what :func:`metrics_table` accepts. A DataFrame with a ``method`` column (or several
    rows per metric) is drawn as one bar per row instead: use :func:`method_comparison` for that.
    """
    table = metrics_table(metrics, split)
    if table.empty:
        return missing_figure(
            f"No {split} metrics in this run (is it finished?).", title or f"{split} metrics"
        )
    fig = go.Figure()
    for col in table.columns:
        fig.add_trace(
            go.Bar(
                x=list(table.index),
                y=table[col].tolist(),
                name=str(col),
                texttemplate="%{y:.3f}",
                textposition="outside",
                textfont={"size": 9},
            )
        )
    fig.update_layout(
        title=title or f"{split.capitalize()} metrics (full ranking)",
        barmode="group",
        yaxis_title="value",
        height=380,
    )
    return fig


def group_metrics_table(groups: Mapping[str, Any], metric: str = "ndcg@20") -> pd.DataFrame:
    """``Run.groups`` as a long table ``grouping, group, users, <metric>``."""
    rows = []
    for grouping, levels in (groups or {}).items():
        for level, values in levels.items():
            rows.append(
                {
                    "grouping": grouping,
                    "group": level,
                    "users": values.get("users"),
                    metric: values.get(metric),
                }
            )
    return pd.DataFrame(rows, columns=["grouping", "group", "users", metric])


def group_metrics_figure(
    groups: Mapping[str, Any], metric: str = "ndcg@20", groupings: Sequence[str] = ("activity", "social")
) -> go.Figure:
    """Test ``metric`` per user group: activity thirds (cold -> active) and, when the dataset has
    social links, users with / without links. One subplot per grouping present; a grouping the
    run lacks (``social`` on ml-100k) is named in the title instead of being drawn empty.
    """
    table = group_metrics_table(groups, metric)
    present = [g for g in groupings if g in set(table["grouping"])]
    absent = [g for g in groupings if g not in present]
    if not present:
        return missing_figure("This run has no per-group metrics.", f"Test {metric} by user group")
    fig = make_subplots(rows=1, cols=len(present), subplot_titles=[f"by {g}" for g in present])
    for i, grouping in enumerate(present, 1):
        sub = table[table["grouping"] == grouping]
        fig.add_trace(
            go.Bar(
                x=sub["group"].tolist(),
                y=sub[metric].tolist(),
                name=grouping,
                text=[f"n={n}" for n in sub["users"]],
                textposition="outside",
                showlegend=False,
            ),
            row=1,
            col=i,
        )
    title = f"Test {metric} by user group"
    if absent:
        why = " - the dataset has no social links" if "social" in absent else ""
        title += f" (not available: {', '.join(absent)}{why})"
    fig.update_yaxes(title_text=metric, col=1)
    fig.update_layout(title=title, height=380)
    return fig
