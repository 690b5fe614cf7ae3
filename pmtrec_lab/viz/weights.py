"""Figures of per-entity task weights (PMTRec's personalization), from ``entity_weights``.

Input: the ``entity_weights`` diagnostics table (``epoch, side, entity, task, weight, steps``;
``pmtrec_lab.train.diagnostics``): each entity's weight per task averaged over the steps of that
epoch that touched it, at the recorded epochs. A task that never touches a side (the user-label
task on items) has weight 0 there; such (side, task) pairs are left out of every figure and
summary, since a 0 there means "not applicable", not "switched off".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pmtrec_lab.viz._common import (
    SIDES,
    log_axis,
    missing_figure,
    ordered_tasks,
    require_columns,
    side_panels,
    task_colors,
    task_line,
)

__all__ = [
    "applicable_weights",
    "entity_trajectory",
    "mean_task_weights",
    "pick_entity",
    "weight_activity_correlation",
    "weight_distributions",
    "weights_over_epochs",
    "weights_vs_activity",
]

_COLUMNS = ("epoch", "side", "entity", "task", "weight")
_NO_WEIGHTS = (
    "This run recorded no per-entity task weights (only PMTRec-style methods with per-entity "
    "weights do, and only with diagnostics enabled)."
)


def applicable_weights(entity_weights: pd.DataFrame) -> pd.DataFrame:
    """Rows of (side, task) pairs where the task touches that side (some weight > 0)."""
    if entity_weights is None or entity_weights.empty:
        return pd.DataFrame(columns=list(_COLUMNS) + ["steps"])
    require_columns(entity_weights, _COLUMNS, "entity_weights")
    live = entity_weights.groupby(["side", "task"], observed=True)["weight"].transform("max") > 0
    return entity_weights[live]


def _at_epoch(ew: pd.DataFrame, epoch: int | None) -> tuple[pd.DataFrame, int]:
    epochs = sorted(ew["epoch"].unique())
    chosen = epochs[-1] if epoch is None else int(epoch)
    if chosen not in epochs:
        raise ValueError(f"no weights recorded at epoch {chosen}; recorded epochs: {epochs}")
    return ew[ew["epoch"] == chosen], int(chosen)


def mean_task_weights(entity_weights: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """Per side and task at ``epoch`` (default: the last recorded): ``mean``, ``std``, ``p10``,
    ``p90`` of the entities' weights and ``entities``; empty when nothing was recorded."""
    ew = applicable_weights(entity_weights)
    cols = ["side", "task", "mean", "std", "p10", "p90", "entities"]
    if ew.empty:
        return pd.DataFrame(columns=cols)
    ew, _ = _at_epoch(ew, epoch)
    order = ordered_tasks(ew)
    g = ew.groupby(["side", "task"], observed=True)["weight"]
    out = pd.DataFrame(
        {
            "mean": g.mean(),
            "std": g.std(ddof=0),
            "p10": g.quantile(0.1),
            "p90": g.quantile(0.9),
            "entities": g.size(),
        }
    ).reset_index()
    out["_s"] = out["side"].map({s: i for i, s in enumerate(SIDES)})
    out["_t"] = out["task"].map({t: i for i, t in enumerate(order)})
    return out.sort_values(["_s", "_t"]).drop(columns=["_s", "_t"]).reset_index(drop=True)[cols]


def weight_distributions(entity_weights: pd.DataFrame, epoch: int | None = None) -> go.Figure:
    """Distribution of the per-entity weight of each task, one panel per side (users, items).

    A violin (with its box) per task at ``epoch`` (default: the last recorded). Spread within a
    task is the personalization: with shared or uniform weights every entity with the same task
    set has the same weight and the violin collapses to a line.
    """
    ew = applicable_weights(entity_weights)
    if ew.empty:
        return missing_figure(_NO_WEIGHTS, "Per-entity task weights")
    ew, chosen = _at_epoch(ew, epoch)
    fig, sides = side_panels(ew)
    colors = task_colors(ordered_tasks(ew))
    for i, side in enumerate(sides, 1):
        sub = ew[ew["side"] == side]
        for task in ordered_tasks(sub):
            w = sub.loc[sub["task"] == task, "weight"]
            fig.add_trace(
                go.Violin(
                    y=w.to_numpy(),
                    name=task,
                    legendgroup=task,
                    showlegend=i == 1 or task not in set(ew.loc[ew["side"] == sides[0], "task"]),
                    line_color=colors[task],
                    box_visible=True,
                    meanline_visible=True,
                    points=False,
                    spanmode="hard",
                ),
                row=1,
                col=i,
            )
    fig.update_yaxes(title_text="task weight", range=[0, 1], col=1)
    fig.update_layout(title=f"Per-entity task weights at epoch {chosen}", height=420)
    return fig


def _binned_means(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means of ``y`` (and their standard errors) within quantile bins of ``x``; x = bin median."""
    if len(x) == 0:
        return np.array([]), np.array([]), np.array([])
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
    xs, ys, es = [], [], []
    for b in np.unique(idx):
        m = idx == b
        xs.append(float(np.median(x[m])))
        ys.append(float(y[m].mean()))
        es.append(float(y[m].std(ddof=0) / np.sqrt(m.sum())))
    return np.array(xs), np.array(ys), np.array(es)


def _join_activity(ew: pd.DataFrame, activity: pd.DataFrame) -> pd.DataFrame:
    require_columns(activity, ("side", "entity", "activity"), "activity table")
    cols = ["side", "entity", "activity"] + (["social_degree"] if "social_degree" in activity.columns else [])
    return ew.merge(activity[cols], on=["side", "entity"], how="inner")


def _with_social_degree(
    activity_counts: pd.DataFrame, social_degree: Sequence[float] | np.ndarray | None
) -> pd.DataFrame:
    """``activity_counts`` (a copy), its users' ``social_degree`` taken from ``social_degree``
    (per user id) when given, items' left NaN."""
    act = activity_counts.copy()
    if social_degree is not None:
        deg = np.asarray(social_degree, dtype=float)
        is_user = act["side"] == "user"
        act["social_degree"] = np.nan
        act.loc[is_user, "social_degree"] = deg[act.loc[is_user, "entity"].to_numpy()]
    return act


def _say_no_social_links(fig: go.Figure) -> None:
    """The third panel of :func:`weights_vs_activity` says there is no social degree to plot."""
    lo, hi = fig.layout.xaxis3.domain
    fig.add_annotation(
        text="The dataset has no social links:<br>no social degree to plot.",
        xref="paper",
        yref="paper",
        x=(lo + hi) / 2,
        y=0.5,
        showarrow=False,
    )
    fig.update_xaxes(visible=False, col=3)


def weights_vs_activity(
    entity_weights: pd.DataFrame,
    activity_counts: pd.DataFrame,
    social_degree: Sequence[float] | np.ndarray | None = None,
    epoch: int | None = None,
    bins: int = 8,
) -> go.Figure:
    """Mean task weight against how active an entity is, per task (binned by activity quantiles).

    Panels: users vs training interactions, items vs training interactions, users vs social
    degree. ``activity_counts`` is :func:`pmtrec_lab.viz.data.entity_activity`'s table
    (``side, entity, activity``, optionally ``social_degree``); ``social_degree`` (per user id)
    overrides its column. Without social links the third panel says so instead of plotting.
    Error bars are standard errors of the bin means.
    """
    ew = applicable_weights(entity_weights)
    if ew.empty:
        return missing_figure(_NO_WEIGHTS, "Task weights vs activity")
    ew, chosen = _at_epoch(ew, epoch)
    joined = _join_activity(ew, _with_social_degree(activity_counts, social_degree))
    has_social = (
        "social_degree" in joined.columns
        and joined.loc[joined["side"] == "user", "social_degree"].notna().any()
    )
    titles = [
        "users: weight vs interactions",
        "items: weight vs interactions",
        "users: weight vs social degree",
    ]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, shared_yaxes=True)
    colors = task_colors(ordered_tasks(ew))
    shown: set[str] = set()
    panels = [("user", "activity", 1), ("item", "activity", 2)] + (
        [("user", "social_degree", 3)] if has_social else []
    )
    drawn_x: dict[int, list[float]] = {1: [], 2: [], 3: []}  # per panel: the bin medians drawn
    for side, xcol, col in panels:
        sub = joined[(joined["side"] == side) & joined[xcol].notna()]
        for task in ordered_tasks(sub):
            t = sub[sub["task"] == task]
            xs, ys, es = _binned_means(t[xcol].to_numpy(float), t["weight"].to_numpy(float), bins)
            drawn_x[col].extend(np.asarray(xs, float).tolist())
            line = task_line(
                task,
                colors[task],
                shown,
                xs,
                ys,
                error_y={"type": "data", "array": es, "visible": True},
                hovertemplate=f"{task}<br>{xcol} ~%{{x}}<br>mean weight %{{y:.3f}}<extra></extra>",
            )
            fig.add_trace(line, row=1, col=col)
            shown.add(task)
    if not has_social:
        _say_no_social_links(fig)
    for col in (1, 2):  # activity spans orders of magnitude: log axes with whole-number ticks
        log_axis(fig, "x", drawn_x[col], col=col)
        fig.update_xaxes(title_text="training interactions (bin median)", col=col)
    fig.update_xaxes(title_text="social links (bin median)", col=3)
    fig.update_yaxes(title_text="mean task weight", col=1)
    fig.update_layout(
        title=f"Task weights vs activity at epoch {chosen}",
        height=420,
        meta={"social": bool(has_social)},
    )
    return fig


def weight_activity_correlation(
    entity_weights: pd.DataFrame, activity_counts: pd.DataFrame, epoch: int | None = None
) -> pd.DataFrame:
    """Spearman correlation of each task's weight with activity (and social degree where known),
    per side: ``side, task, against, spearman, entities``."""
    ew = applicable_weights(entity_weights)
    cols = ["side", "task", "against", "spearman", "entities"]
    if ew.empty:
        return pd.DataFrame(columns=cols)
    ew, _ = _at_epoch(ew, epoch)
    joined = _join_activity(ew, activity_counts)
    rows = []
    for (side, task), g in joined.groupby(["side", "task"], observed=True, sort=False):
        for against in ("activity", "social_degree"):
            if against not in g.columns:
                continue
            sub = g[["weight", against]].dropna()
            if len(sub) < 3 or sub[against].nunique() < 2 or sub["weight"].nunique() < 2:
                continue
            rho = sub["weight"].rank().corr(sub[against].rank())
            rows.append(
                {"side": side, "task": task, "against": against, "spearman": float(rho), "entities": len(sub)}
            )
    return pd.DataFrame(rows, columns=cols)


def weights_over_epochs(entity_weights: pd.DataFrame) -> go.Figure:
    """Mean weight per task over the recorded epochs, with the 10-90% band across entities,
    one panel per side: how the TF schedule shifts weight towards the main task over training."""
    ew = applicable_weights(entity_weights)
    if ew.empty:
        return missing_figure(_NO_WEIGHTS, "Task weights over epochs")
    fig, sides = side_panels(ew)
    colors = task_colors(ordered_tasks(ew))
    shown: set[str] = set()
    for i, side in enumerate(sides, 1):
        sub = ew[ew["side"] == side]
        for task in ordered_tasks(sub):
            g = sub[sub["task"] == task].groupby("epoch")["weight"]
            stats = pd.DataFrame(
                {"mean": g.mean(), "lo": g.quantile(0.1), "hi": g.quantile(0.9)}
            ).reset_index()
            x = stats["epoch"].tolist()
            fig.add_trace(
                go.Scatter(
                    x=x + x[::-1],
                    y=stats["hi"].tolist() + stats["lo"].tolist()[::-1],
                    fill="toself",
                    line={"width": 0},
                    fillcolor=colors[task],
                    opacity=0.15,
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=task,
                ),
                row=1,
                col=i,
            )
            fig.add_trace(task_line(task, colors[task], shown, x, stats["mean"]), row=1, col=i)
            shown.add(task)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="task weight (mean, 10-90% band)", range=[0, 1], col=1)
    fig.update_layout(title="Task weights over training", height=420)
    return fig


def pick_entity(entity_weights: pd.DataFrame, side: str = "user", entity: int | None = None) -> int | None:
    """``entity`` if it has recorded weights on ``side``; with None, the entity whose task weights
    moved most over the recorded epochs (largest summed per-task standard deviation across
    epochs, among entities recorded at every epoch; ties to the lower id): the most telling
    trajectory. None when the run recorded no weights on that side. A given ``entity`` without
    weights raises ValueError."""
    ew = applicable_weights(entity_weights)
    sub = ew[ew["side"] == side]
    if entity is not None:
        if not (sub["entity"] == int(entity)).any():
            raise ValueError(f"{side} {entity} has no recorded weights (not touched, or outside the cohort)")
        return int(entity)
    if sub.empty:
        return None
    n_epochs = sub["epoch"].nunique()
    seen = sub.groupby("entity")["epoch"].nunique()
    full = sub[sub["entity"].isin(seen[seen == n_epochs].index)]
    if full.empty:
        full = sub
    movement = full.groupby(["entity", "task"])["weight"].std(ddof=0).fillna(0.0).groupby("entity").sum()
    best = movement[movement == movement.max()]
    return int(best.index.min())


def entity_trajectory(entity_weights: pd.DataFrame, side: str, entity: int | None) -> go.Figure:
    """One entity's weight per task at each recorded epoch (stacked to 1: its mix of tasks)."""
    ew = applicable_weights(entity_weights)
    if entity is None:
        return missing_figure(_NO_WEIGHTS, f"Task weights of one {side}")
    sub = ew[(ew["side"] == side) & (ew["entity"] == int(entity))]
    if sub.empty:
        return missing_figure(
            f"No recorded weights for {side} {entity} (never touched at the recorded epochs, or "
            "outside the diagnostics cohort).",
            f"Task weights of {side} {entity}",
        )
    colors = task_colors(ordered_tasks(ew))
    fig = go.Figure()
    for task in ordered_tasks(sub):
        t = sub[sub["task"] == task].sort_values("epoch")
        fig.add_trace(
            go.Scatter(
                x=t["epoch"],
                y=t["weight"],
                mode="lines+markers",
                name=task,
                stackgroup="w",
                line={"color": colors[task]},
                hovertemplate=f"{task}<br>epoch %{{x}}<br>weight %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Task weights of {side} {entity} over training",
        xaxis_title="epoch",
        yaxis_title="task weight (stacked)",
        yaxis_range=[0, 1.02],
        height=380,
    )
    return fig
