"""Figures of the auxiliary tasks' own metrics (``data.aux_holdout``; issue "What a multi-task
recommender researcher expects"): each auxiliary task judged on its held-out edges or labels
(``pmtrec_lab/eval/auxiliary.py``: AUC and Hit@10 for link tasks, accuracy or micro-F1 for label
tasks), at the selected epoch (``metrics.json``'s ``aux``) and per epoch on validation
(``history.json``'s ``valid_aux/<task>/<metric>``). A run without the setting, or whose method trains
no auxiliary head (single-task), gives an empty table and a placeholder naming the setting.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from pmtrec_lab.viz._common import missing_figure, task_colors

__all__ = ["aux_metrics_over_epochs", "aux_metrics_table"]

PREFIX = "valid_aux/"
_MISSING = (
    "This run has no auxiliary-task metrics: they are measured with data.aux_holdout (a share of "
    "each auxiliary relation and label set held out), for the tasks whose heads the method trains."
)


def aux_metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per (task, metric) with its validation and test value at the selected epoch."""
    aux = metrics.get("aux") or {}
    rows = [
        {
            "task": task,
            "metric": name,
            "valid": value,
            "test": (aux.get("test") or {}).get(task, {}).get(name),
        }
        for task, values in (aux.get("valid") or {}).items()
        for name, value in values.items()
    ]
    return pd.DataFrame(rows, columns=["task", "metric", "valid", "test"])


def aux_metrics_over_epochs(history: pd.DataFrame, best_epoch: int | None = None) -> go.Figure:
    """Each auxiliary task's validation metrics over the evaluated epochs, a line per (task,
    metric), the selected epoch dashed."""
    title = "Auxiliary tasks on their held-out cases (validation)"
    columns = [c for c in history.columns if c.startswith(PREFIX)]
    if not columns:
        return missing_figure(_MISSING, title)
    tasks = list(dict.fromkeys(c[len(PREFIX) :].rsplit("/", 1)[0] for c in columns))
    colors = task_colors(tasks)
    fig = go.Figure()
    for c in columns:
        task, name = c[len(PREFIX) :].rsplit("/", 1)
        rows = history[["epoch", c]].dropna()
        dash = "solid" if name in ("auc", "accuracy", "micro_f1") else "dot"
        fig.add_trace(
            go.Scatter(
                x=rows["epoch"],
                y=rows[c],
                mode="lines+markers",
                name=f"{task} {name}",
                line={"color": colors[task], "dash": dash},
            )
        )
    if best_epoch is not None:
        fig.add_vline(x=best_epoch, line_dash="dash", line_color="grey")
    fig.update_layout(
        title=title, xaxis_title="epoch", yaxis_title="metric", yaxis_range=[0, 1.02], height=380
    )
    return fig
