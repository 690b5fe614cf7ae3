"""Figures of PMTRec v4's in-run level selection (``docs/pmtrec-method.md``, "PMTRec v4";
``level_select``), from a run's ``level_selection.json`` (``Run.level_rounds``).

Each round (before an epoch of ``level_at``) chooses a level per auxiliary task, or one shared
level, by successive halving over short branched continuations scored on the meta split's
NDCG@20. The table has one row per (round, task group, candidate) with its scores at each halving
stage; the figure shows the first stage's scores (every candidate ran it) with the chosen level
marked, one panel per (round, group). A run without ``level_select`` gives a placeholder.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pmtrec_lab.viz._common import missing_figure

__all__ = ["level_rounds_figure", "level_rounds_table"]

_MISSING = (
    "This run chose no auxiliary levels: they are chosen by pmtrec with level_select=true "
    "(and data.meta_split=true)."
)


def level_rounds_table(rounds: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (round, group, candidate): ``after_epoch`` (finished epochs when the round ran),
    ``tasks``, ``level``, ``stage1``, ``stage2``, ... (meta NDCG@20 per halving stage; NaN where
    the candidate no longer ran), ``chosen``."""
    rows = []
    for r in rounds:
        for g in r["groups"]:
            for i, level in enumerate(g["candidates"]):
                row: dict[str, Any] = {
                    "after_epoch": r["epoch"],
                    "tasks": ", ".join(g["tasks"]),
                    "level": level,
                }
                for s, scores in enumerate(g["scores"], start=1):
                    row[f"stage{s}"] = scores[i]
                row["chosen"] = level == g["chosen"]
                rows.append(row)
    return pd.DataFrame(rows)


def level_rounds_figure(rounds: list[dict[str, Any]]) -> go.Figure:
    """The first halving stage's meta NDCG@20 per candidate level, one panel per (round, group),
    the chosen level in a darker color; titles give the branch epochs each round spent."""
    title = "Auxiliary levels chosen in the run (meta-split NDCG@20 after the first branch stage)"
    if not rounds:
        return missing_figure(_MISSING, title)
    panels = [(r, g) for r in rounds for g in r["groups"]]
    names = [f"after epoch {r['epoch']}: {', '.join(g['tasks'])}" for r, g in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=names, shared_yaxes=True)
    for col, (_, g) in enumerate(panels, start=1):
        levels = [f"{v:g}" for v in g["candidates"]]
        colors = ["#1f4e79" if v == g["chosen"] else "#9ecae1" for v in g["candidates"]]
        fig.add_trace(
            go.Bar(x=levels, y=g["scores"][0], marker_color=colors, showlegend=False, name=names[col - 1]),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="level", type="category", row=1, col=col)
    spent = ", ".join(f"{r['branch_epochs']} after epoch {r['epoch']}" for r in rounds)
    fig.update_layout(title=f"{title}<br><sup>branch epochs: {spent}; dark: chosen</sup>", height=380)
    fig.update_yaxes(title_text="meta NDCG@20", row=1, col=1)
    return fig
