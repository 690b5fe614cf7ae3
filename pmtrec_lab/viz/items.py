"""Item-side and beyond-accuracy views (issue "What a multi-task recommender researcher expects"):
a run's test metric by item popularity group, its beyond-accuracy metrics (``items.json``,
``pmtrec_lab.eval.beyond``), and a grid's accuracy against catalogue coverage per method."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pmtrec_lab.viz._common import missing_figure

__all__ = ["accuracy_coverage", "beyond_at", "beyond_table", "item_group_figure", "read_items"]


def read_items(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's ``items.json`` (None for runs trained before it existed)."""
    path = Path(run_dir) / "items.json"
    return json.loads(path.read_text()) if path.is_file() else None


def beyond_table(items: Mapping[str, Any] | None) -> pd.DataFrame:
    """One row per cutoff: item coverage, average popularity, Gini index and tail percentage."""
    if not items:
        return pd.DataFrame(columns=["k", "itemcoverage", "averagepopularity", "giniindex", "tailpercentage"])
    test = items["test"]
    ks = sorted({int(name.split("@")[1]) for name in test})
    return pd.DataFrame(
        [{"k": k, **{name.split("@")[0]: test[name] for name in test if name.endswith(f"@{k}")}} for k in ks]
    )


def beyond_at(items: Mapping[str, Any] | None, k: int = 20) -> dict[str, float]:
    """The beyond-accuracy metrics at cutoff ``k`` (empty for runs without ``items.json``)."""
    return {name: value for name, value in (items or {}).get("test", {}).items() if name.endswith(f"@{k}")}


def item_group_figure(items: Mapping[str, Any] | None, metric: str = "ndcg@20") -> go.Figure:
    """Test ``metric`` per item group (popularity thirds, tail to head, and the top 20% against the
    rest); an item's value is its share of its users' metric (``eval.items``)."""
    title = f"Test {metric} by item popularity (per held-out item)"
    if not items or "groups" not in items:
        return missing_figure("This run has no item groups (trained before items.json existed).", title)
    groupings = [g for g in ("popularity", "head20") if g in items["groups"]]
    fig = make_subplots(rows=1, cols=len(groupings), subplot_titles=[f"by {g}" for g in groupings])
    for i, grouping in enumerate(groupings, 1):
        levels = items["groups"][grouping]
        fig.add_trace(
            go.Bar(
                x=list(levels),
                y=[levels[lv].get(metric) for lv in levels],
                text=[f"n={levels[lv]['items']}" for lv in levels],
                textposition="outside",
                showlegend=False,
            ),
            row=1,
            col=i,
        )
    fig.update_layout(title=title, height=360)
    return fig


def accuracy_coverage(summary: pd.DataFrame | None, title: str | None = None) -> go.Figure:
    """Test NDCG@20 against item coverage@20, one point per (dataset, method): the trade-off
    between accuracy and how much of the catalogue the method recommends."""
    title = title or "Accuracy against catalogue coverage (test, @20)"
    if summary is None or summary.empty or "coverage20" not in summary.columns:
        return missing_figure("No coverage in these tables (runs trained before items.json existed).", title)
    fig = go.Figure()
    for dataset, part in summary.groupby("dataset", sort=False):
        fig.add_trace(
            go.Scatter(
                x=part["coverage20"],
                y=part["ndcg20_mean"] * 100,
                mode="markers+text",
                text=part["method"],
                textposition="top center",
                name=str(dataset),
            )
        )
    fig.update_layout(title=title, xaxis_title="item coverage@20", yaxis_title="NDCG@20 x100", height=420)
    return fig
