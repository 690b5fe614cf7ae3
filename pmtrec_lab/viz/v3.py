"""Figures of PMTRec v3's signals (docs/pmtrec-method.md, "PMTRec v3"), from ``epochs.parquet``.

One figure per metric, a line per (task, side) over epochs: the magnitude signal's correlation
with in-batch counts (``count_spearman``, notebook 02), the usefulness scales lambda_{k,s} and the
per-entity deviations (``usefulness_scale``, ``delta_abs``, 02), the meta cosines and the share
of auxiliary updates Task Focusing reaches (``meta_cos``, ``focus_share``, 03), and the mean
reduce-only GMB factor (``gmb_reduce``, 04). A metric the run did not record (v2, or a method
without that piece) gives a placeholder naming the setting that records it.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from pmtrec_lab.viz._common import missing_figure, ordered_tasks, require_columns, task_colors

#: metric -> (title, y-axis label, the setting that records it, y range or None)
V3_SIGNALS: dict[str, tuple[str, str, str, list[float] | None]] = {
    "count_spearman": (
        "Magnitude signal against in-batch counts (Spearman, within activity deciles)",
        "rho (target |rho| < 0.1)",
        "any run with diagnostics (PMTRec's signal, else the raw norm)",
        [-1.0, 1.0],
    ),
    "usefulness_scale": (
        "Usefulness scales lambda per task and side",
        "lambda",
        "pmtrec with usefulness=meta_cos (and data.meta_split=true)",
        None,
    ),
    "meta_cos": (
        "Cosine of the meta-loss gradient with each task's",
        "mean cosine",
        "pmtrec with usefulness or delta on (and data.meta_split=true)",
        None,
    ),
    "delta_abs": (
        "Per-entity deviations |delta| of the step's rows",
        "mean |delta|",
        "pmtrec with delta=learned or permuted (and data.meta_split=true)",
        None,
    ),
    "delta_mean": (
        "Per-entity deviations delta of the step's rows",
        "mean delta",
        "pmtrec with delta=learned or permuted (and data.meta_split=true)",
        None,
    ),
    "focus_share": (
        "Share of each task's row-updates that Task Focusing reaches",
        "share (target 1 with focus_everywhere)",
        "pmtrec",
        [0.0, 1.05],
    ),
    "gmb_reduce": (
        "Mean reduce-only GMB factor per task",
        "factor (1: not reduced)",
        "pmtrec with gmb_mode=entity_reduce and rho > 0",
        [0.0, 1.05],
    ),
}


def v3_signal(epochs_table: pd.DataFrame, metric: str) -> go.Figure:
    """``metric`` of ``epochs.parquet`` over epochs, a line per task (dashed for items, dotted
    for side "all"); a placeholder when the run did not record it."""
    if metric not in V3_SIGNALS:
        raise ValueError(f"v3_signal: unknown metric {metric!r}; known: {sorted(V3_SIGNALS)}")
    title, y_label, setting, y_range = V3_SIGNALS[metric]
    require_columns(epochs_table, ["epoch", "task", "side", "metric", "value"], "epochs table")
    rows = epochs_table[epochs_table["metric"] == metric]
    if rows.empty:
        return missing_figure(f"This run did not record {metric}: it is recorded by {setting}.", title)
    colors = task_colors(ordered_tasks(rows))
    dash = {"user": "solid", "item": "dash", "all": "dot"}
    fig = go.Figure()
    for (task, side), g in rows.groupby(["task", "side"], sort=False):
        g = g.sort_values("epoch")
        name = task if side == "all" else f"{task} ({side}s)"
        fig.add_trace(
            go.Scatter(
                x=g["epoch"],
                y=g["value"],
                mode="lines+markers",
                name=name,
                line={"color": colors[task], "dash": dash.get(side, "solid")},
            )
        )
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=y_label, height=380)
    if y_range is not None:
        fig.update_yaxes(range=y_range)
    return fig
