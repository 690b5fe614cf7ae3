"""Benefit-map figures (issue "PMTRec v4", part 1): who gains from which auxiliary task, by bins of
an entity feature, with the bootstrap intervals of ``pmtrec_lab.benefit.analysis.by_bins``."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from pmtrec_lab.viz._common import missing_figure, require_columns, side_panels, task_colors, task_line

__all__ = ["benefit_by_bins"]


def benefit_by_bins(bins: pd.DataFrame, feature: str = "train_degree", title: str | None = None) -> go.Figure:
    """Mean benefit (validation NDCG@20 x100, EW minus EW without the task) per bin of ``feature``,
    one line per task with its bootstrap interval, a panel per side; x is the bin's feature range.
    ``bins``: the ``benefit_bins.csv`` table of one dataset."""
    if bins is None or bins.empty:
        return missing_figure("no benefit-map tables yet (results/benefit-map/<dataset>/)", title)
    require_columns(
        bins,
        ["task", "side", "feature", "bin", "low", "high", "benefit", "ci_low", "ci_high"],
        "benefit bins",
    )
    part = bins[bins["feature"] == feature]
    if part.empty:
        return missing_figure(f"no bins of {feature} (the feature is constant on every side)", title)
    fig, sides = side_panels(part)
    colors = task_colors(part["task"])
    shown: set[str] = set()
    for col, side in enumerate(sides, start=1):
        for task, frame in part[part["side"] == side].groupby("task", sort=False):
            frame = frame.sort_values("bin")
            labels = [
                f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}" for lo, hi in zip(frame["low"], frame["high"])
            ]
            y = frame["benefit"] * 100
            error = {
                "type": "data",
                "symmetric": False,
                "array": (frame["ci_high"] * 100 - y).tolist(),
                "arrayminus": (y - frame["ci_low"] * 100).tolist(),
            }
            fig.add_trace(task_line(task, colors[task], shown, labels, y, error_y=error), row=1, col=col)
            shown.add(task)
        fig.add_hline(y=0, line={"color": "grey", "dash": "dot"}, row=1, col=col)
        fig.update_xaxes(title_text=feature.replace("_", " "), type="category", row=1, col=col)
    fig.update_yaxes(title_text="benefit (NDCG@20 x100)", row=1, col=1)
    fig.update_layout(
        title=title or f"Benefit of each auxiliary task by {feature.replace('_', ' ')}", height=380
    )
    return fig
