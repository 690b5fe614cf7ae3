"""Figures of gradient geometry during training: conflicts (Task Focusing) and magnitudes (GMB).

Inputs are the diagnostics tables of ``pmtrec_lab.train.load_diagnostics``:

- ``cosine_hist`` (``epoch, task, side, kind, bin_left, bin_right, count``): per epoch, the
  histogram over touched entities of the cosine between an auxiliary task's gradient and the
  main-task gradient; ``kind`` "raw" (before any manipulation), "after" (after the method's
  alignment, only when the method reports it) or "combined" (the combined gradient vs main,
  task "combined").
- ``epochs`` (long table ``epoch, task, side, metric, value``): ``conflict_fraction``,
  ``conflict_fraction_combined``, ``grad_norm``, ``norm_ratio_before`` / ``norm_ratio_after``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pmtrec_lab.viz._common import (
    log_axis,
    missing_figure,
    ordered_tasks,
    require_columns,
    side_panels,
    task_colors,
    task_line,
)

__all__ = [
    "conflict_fraction_over_epochs",
    "conflict_summary",
    "cosine_before_after",
    "cosine_histograms",
    "grad_norm_over_epochs",
    "magnitude_summary",
    "norm_ratio_over_epochs",
    "norm_ratios",
]

_HIST_COLS = ("epoch", "task", "side", "kind", "bin_left", "bin_right", "count")
_EPOCH_COLS = ("epoch", "task", "side", "metric", "value")
_KIND_LABEL = {
    "raw": "raw (task vs main gradient)",
    "after": "after TF alignment",
    "combined": "combined vs main gradient",
}


def _metric(epochs_table: pd.DataFrame, metric: str) -> pd.DataFrame:
    if epochs_table is None or epochs_table.empty:
        return pd.DataFrame(columns=list(_EPOCH_COLS))
    require_columns(epochs_table, _EPOCH_COLS, "epochs table")
    return epochs_table[epochs_table["metric"] == metric]


def _hist(cosine_hist: pd.DataFrame) -> pd.DataFrame:
    if cosine_hist is None or cosine_hist.empty:
        return pd.DataFrame(columns=list(_HIST_COLS))
    require_columns(cosine_hist, _HIST_COLS, "cosine_hist")
    return cosine_hist


def _pick_epochs(epochs: list[int], n: int = 3) -> list[int]:
    """First, middle and last recorded epochs (fewer when fewer exist)."""
    if len(epochs) <= n:
        return epochs
    idx = np.linspace(0, len(epochs) - 1, n).round().astype(int)
    return [epochs[i] for i in dict.fromkeys(idx.tolist())]


def _density(bins: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Bin midpoints and densities of a histogram's rows (``bin_left, bin_right, count``)."""
    mid = ((bins["bin_left"] + bins["bin_right"]) / 2).to_numpy()
    counts = bins["count"].to_numpy(float)
    width = (bins["bin_right"] - bins["bin_left"]).to_numpy()
    total = counts.sum()
    return mid, counts / (total * width) if total > 0 else counts.astype(float)


def cosine_histograms(
    cosine_hist: pd.DataFrame, kind: str = "raw", epochs: list[int] | None = None
) -> go.Figure:
    """Cosine between each auxiliary task's per-entity gradient and the main task's, one panel per
    (task, side), one density curve per epoch (default: first, middle and last recorded).

    Mass left of 0 is conflict. ``kind`` "after" exists only for methods that report cosines after
    their alignment; without it the figure says so.
    """
    h = _hist(cosine_hist)
    h = h[h["kind"] == kind]
    if h.empty:
        have = sorted(_hist(cosine_hist)["kind"].unique())
        return missing_figure(
            f"No '{kind}' cosine histograms in this run (recorded kinds: {have or 'none'}).",
            f"Cosine to the main-task gradient ({_KIND_LABEL.get(kind, kind)})",
        )
    all_epochs = sorted(h["epoch"].unique().tolist())
    chosen = [e for e in (epochs or _pick_epochs(all_epochs)) if e in all_epochs]
    panels = list(dict.fromkeys(zip(h["task"], h["side"])))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=[f"{t} ({s}s)" for t, s in panels], shared_xaxes=True
    )
    shades = _epoch_shades(len(chosen))
    for p, (task, side) in enumerate(panels):
        r, c = divmod(p, cols)
        sub = h[(h["task"] == task) & (h["side"] == side)]
        for j, epoch in enumerate(chosen):
            e = sub[sub["epoch"] == epoch].sort_values("bin_left")
            if e.empty:
                continue
            mid, dens = _density(e)
            fig.add_trace(
                go.Scatter(
                    x=mid,
                    y=dens,
                    mode="lines",
                    line={"shape": "hvh", "color": shades[j]},
                    name=f"epoch {epoch}",
                    legendgroup=f"epoch {epoch}",
                    showlegend=p == 0,
                ),
                row=r + 1,
                col=c + 1,
            )
        fig.add_vline(x=0, line_dash="dot", line_color="gray", row=r + 1, col=c + 1)
    fig.update_xaxes(title_text="cosine", range=[-1, 1], row=rows)
    fig.update_yaxes(title_text="density", col=1)
    fig.update_layout(
        title=f"Cosine to the main-task gradient: {_KIND_LABEL.get(kind, kind)}", height=300 * rows + 80
    )
    return fig


def _epoch_shades(n: int) -> list[str]:
    """Light to dark blues, so later epochs read as darker."""
    if n <= 1:
        return ["#08519c"]
    return [f"rgba(8, 81, 156, {0.3 + 0.7 * i / (n - 1):.2f})" for i in range(n)]


def cosine_before_after(cosine_hist: pd.DataFrame, epoch: int | None = None) -> go.Figure:
    """At one epoch (default: the last), each auxiliary task's raw cosine histogram against the
    same after Task Focusing ("after", when the method reports it), plus the combined gradient's
    cosine to the main task per side (after TF alignment no entity's combined gradient should
    point against its main-task gradient: no mass below 0).
    """
    h = _hist(cosine_hist)
    if h.empty:
        return missing_figure(
            "This run recorded no cosine histograms.", "Cosines before and after Task Focusing"
        )
    chosen = int(h["epoch"].max()) if epoch is None else int(epoch)
    h = h[h["epoch"] == chosen]
    aux = list(dict.fromkeys(zip(h.loc[h["kind"] == "raw", "task"], h.loc[h["kind"] == "raw", "side"])))
    comb = [s for s in ("user", "item") if ((h["kind"] == "combined") & (h["side"] == s)).any()]
    panels = [(t, s, "aux") for t, s in aux] + [("combined", s, "combined") for s in comb]
    if not panels:
        return missing_figure(
            f"No cosine histograms at epoch {chosen}.", "Cosines before and after Task Focusing"
        )
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    titles = [f"{t} ({s}s)" if k == "aux" else f"combined gradient ({s}s)" for t, s, k in panels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles)
    style = {"raw": "#d62728", "after": "#2ca02c", "combined": "#1f77b4"}
    shown: set[str] = set()
    for p, (task, side, k) in enumerate(panels):
        r, c = divmod(p, cols)
        kinds = ["raw", "after"] if k == "aux" else ["combined"]
        for kind in kinds:
            e = h[(h["task"] == task) & (h["side"] == side) & (h["kind"] == kind)].sort_values("bin_left")
            if e.empty:
                continue
            mid, dens = _density(e)
            fig.add_trace(
                go.Scatter(
                    x=mid,
                    y=dens,
                    mode="lines",
                    fill="tozeroy",
                    opacity=0.6,
                    line={"shape": "hvh", "color": style[kind]},
                    name=_KIND_LABEL[kind],
                    legendgroup=kind,
                    showlegend=kind not in shown,
                ),
                row=r + 1,
                col=c + 1,
            )
            shown.add(kind)
        fig.add_vline(x=0, line_dash="dot", line_color="gray", row=r + 1, col=c + 1)
    note = "" if (h["kind"] == "after").any() else " (the method reports no per-task 'after' cosines)"
    fig.update_xaxes(title_text="cosine", range=[-1, 1], row=rows)
    fig.update_yaxes(title_text="density", col=1)
    fig.update_layout(
        title=f"Cosine to the main-task gradient at epoch {chosen}{note}", height=300 * rows + 80
    )
    return fig


def conflict_fraction_over_epochs(epochs_table: pd.DataFrame) -> go.Figure:
    """Share of touched entities whose auxiliary gradient conflicts with (negative cosine to) the
    main-task gradient, per task and side over epochs (solid), and the share whose *combined*
    gradient still conflicts (dashed black, per side): the gap is what Task Focusing removed."""
    raw = _metric(epochs_table, "conflict_fraction")
    comb = _metric(epochs_table, "conflict_fraction_combined")
    if raw.empty and comb.empty:
        return missing_figure("This run recorded no conflict fractions.", "Gradient conflicts over training")
    colors = task_colors(ordered_tasks(raw)) if not raw.empty else {}
    fig = go.Figure()
    for (task, side), g in raw.groupby(["task", "side"], sort=False):
        g = g.sort_values("epoch")
        fig.add_trace(
            go.Scatter(
                x=g["epoch"],
                y=g["value"],
                mode="lines+markers",
                name=f"{task} ({side}s)",
                line={"color": colors.get(task), "dash": "solid" if side == "user" else "dashdot"},
            )
        )
    for side, g in comb.groupby("side", sort=False):
        g = g.sort_values("epoch")
        fig.add_trace(
            go.Scatter(
                x=g["epoch"],
                y=g["value"],
                mode="lines",
                name=f"combined gradient ({side}s)",
                line={"color": "black", "dash": "dash" if side == "user" else "dot"},
            )
        )
    fig.update_layout(
        title="Share of entities whose gradient conflicts with the main task",
        xaxis_title="epoch",
        yaxis_title="conflict fraction (cosine < 0)",
        yaxis_range=[0, 1],
        height=420,
    )
    return fig


def conflict_summary(epochs_table: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """At ``epoch`` (default: last): ``task, side, conflict_fraction`` for each auxiliary task, and
    rows with task "combined" holding ``conflict_fraction_combined`` per side."""
    raw = _metric(epochs_table, "conflict_fraction")
    comb = _metric(epochs_table, "conflict_fraction_combined")
    both = pd.concat([raw, comb])
    if both.empty:
        return pd.DataFrame(columns=["task", "side", "conflict_fraction"])
    chosen = int(both["epoch"].max()) if epoch is None else int(epoch)
    out = both[both["epoch"] == chosen][["task", "side", "value"]].rename(
        columns={"value": "conflict_fraction"}
    )
    return out.reset_index(drop=True)


def norm_ratios(epochs_table: pd.DataFrame) -> pd.DataFrame:
    """Task magnitude relative to the main task's, per epoch/task/side, before and after balancing:
    ``epoch, task, side, before, after, source``.

    Uses the method's ``norm_ratio_before/after`` when it reports them (PMTRec: its moving-average
    magnitudes m^{k,s} / m^{0,s}); otherwise derives ``before`` from the raw ``grad_norm`` of each
    task over the main task's on the same side (``after`` then NaN: nothing was balanced).
    """
    cols = ["epoch", "task", "side", "before", "after", "source"]
    before = _metric(epochs_table, "norm_ratio_before")
    if not before.empty:
        after = _metric(epochs_table, "norm_ratio_after")
        key = ["epoch", "task", "side"]
        out = (
            before[key + ["value"]]
            .rename(columns={"value": "before"})
            .merge(after[key + ["value"]].rename(columns={"value": "after"}), on=key, how="left")
        )
        out["source"] = "method"
        return out[cols].reset_index(drop=True)
    gn = _metric(epochs_table, "grad_norm")
    if gn.empty:
        return pd.DataFrame(columns=cols)
    main = ordered_tasks(gn)[0]
    ref = gn[gn["task"] == main][["epoch", "side", "value"]].rename(columns={"value": "main"})
    out = gn.merge(ref, on=["epoch", "side"], how="inner")
    out["before"] = out["value"] / out["main"]
    out["after"] = np.nan
    out["source"] = "grad_norm"
    return out[cols].reset_index(drop=True)


def norm_ratio_over_epochs(epochs_table: pd.DataFrame) -> go.Figure:
    """Each task's gradient magnitude over the main task's (log scale), before (solid) and after
    (dashed) Gradient Magnitude Balancing, one panel per side. 1 = the main task's scale; a task
    far above 1 dominates the combined gradient unless balanced, far below 1 it vanishes."""
    nr = norm_ratios(epochs_table)
    if nr.empty:
        return missing_figure("This run recorded no gradient norms.", "Gradient magnitude ratios")
    fig, sides = side_panels(nr)
    colors = task_colors(ordered_tasks(nr))
    shown: set[str] = set()
    for i, side in enumerate(sides, 1):
        sub = nr[nr["side"] == side]
        for task in ordered_tasks(sub):
            t = sub[sub["task"] == task].sort_values("epoch")
            line = task_line(task, colors[task], shown, t["epoch"], t["before"], name=f"{task} before GMB")
            fig.add_trace(line, row=1, col=i)
            if t["after"].notna().any():
                after = task_line(
                    task,
                    colors[task],
                    shown,
                    t["epoch"],
                    t["after"],
                    mode="lines",
                    name=f"{task} after GMB",
                    line={"dash": "dash"},
                )
                fig.add_trace(after, row=1, col=i)
            shown.add(task)
        fig.add_hline(y=1, line_dash="dot", line_color="gray", row=1, col=i)
    src = nr["source"].iloc[0]
    note = "" if src == "method" else " (raw grad norms; the method does not balance magnitudes)"
    log_axis(fig, "y", pd.concat([nr["before"], nr["after"]]))  # every side's panel: they share y
    fig.update_yaxes(title_text="magnitude / main task's", col=1)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=f"Task gradient magnitude relative to the main task{note}", height=420)
    return fig


def grad_norm_over_epochs(epochs_table: pd.DataFrame) -> go.Figure:
    """Mean per-row norm of each task's raw gradient over epochs (log scale), one panel per side."""
    gn = _metric(epochs_table, "grad_norm")
    if gn.empty:
        return missing_figure("This run recorded no gradient norms.", "Gradient norms")
    fig, sides = side_panels(gn)
    colors = task_colors(ordered_tasks(gn))
    shown: set[str] = set()
    for i, side in enumerate(sides, 1):
        sub = gn[gn["side"] == side]
        for task in ordered_tasks(sub):
            t = sub[sub["task"] == task].sort_values("epoch")
            fig.add_trace(task_line(task, colors[task], shown, t["epoch"], t["value"]), row=1, col=i)
            shown.add(task)
    log_axis(fig, "y", gn["value"])  # every side's panel: they share y
    fig.update_yaxes(title_text="mean per-row gradient norm", col=1)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Raw task gradient norms", height=400)
    return fig


def magnitude_summary(
    epochs_table: pd.DataFrame, epoch: int | None = None, factor: float = 2.0
) -> pd.DataFrame:
    """Which tasks would dominate (or vanish) without GMB, at ``epoch`` (default: the last).

    Columns ``task, side, before, after, verdict``: ``dominates`` when the magnitude ratio to the
    main task before balancing exceeds ``factor``, ``vanishes`` below ``1 / factor``, else
    ``balanced``; sorted by ``before``, largest first. The main task itself is left out.
    """
    nr = norm_ratios(epochs_table)
    cols = ["task", "side", "before", "after", "verdict"]
    if nr.empty:
        return pd.DataFrame(columns=cols)
    main = ordered_tasks(nr)[0]
    chosen = int(nr["epoch"].max()) if epoch is None else int(epoch)
    out = nr[(nr["epoch"] == chosen) & (nr["task"] != main)].copy()
    out["verdict"] = np.where(
        out["before"] > factor, "dominates", np.where(out["before"] < 1.0 / factor, "vanishes", "balanced")
    )
    return out.sort_values("before", ascending=False)[cols].reset_index(drop=True)
