"""Helpers shared by the figure builders: placeholder figures, task colors, column checks,
per-side panels and per-task lines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from pmtrec_lab.errors import PmtrecError

#: ``fig.layout.meta["missing"]`` holds the reason on a placeholder figure (see :func:`missing_figure`).
MISSING_KEY = "missing"

_PALETTE: Sequence[str] = qualitative.Plotly + qualitative.D3
#: the entity sides, in panel order
SIDES: tuple[str, ...] = ("user", "item")


class MissingSourceError(PmtrecError):
    """A figure or value needs a source the run or dataset lacks (e.g. social links on ml-100k)."""


def missing_figure(message: str, title: str | None = None) -> go.Figure:
    """An empty figure whose only content is ``message`` (centred), for panels whose data is absent.

    Notebooks display it like any figure, so a report says *why* a panel is empty and goes on;
    code can test for it with :func:`is_missing`.
    """
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14}
    )
    fig.update_layout(
        title=title,
        xaxis={"visible": False},
        yaxis={"visible": False},
        height=240,
        plot_bgcolor="rgba(0,0,0,0)",
        meta={MISSING_KEY: message},
    )
    return fig


def is_missing(fig: go.Figure) -> bool:
    """True when ``fig`` is a placeholder made by :func:`missing_figure`."""
    meta = fig.layout.meta
    return isinstance(meta, dict) and MISSING_KEY in meta


def missing_reason(fig: go.Figure) -> str | None:
    """The placeholder's message, or None for a real figure."""
    return fig.layout.meta[MISSING_KEY] if is_missing(fig) else None


def task_colors(tasks: Iterable[str]) -> dict[str, str]:
    """A stable color per task name (in the order given), so every figure colors a task alike."""
    return {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(dict.fromkeys(tasks))}


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise ValueError naming ``what`` and the missing columns when ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; has {list(df.columns)}")


def ordered_tasks(df: pd.DataFrame, column: str = "task") -> list[str]:
    """Task names in first-seen order (the run's task order: the main task first)."""
    return list(dict.fromkeys(df[column].tolist()))


def side_panels(df: pd.DataFrame) -> tuple[go.Figure, list[str]]:
    """A one-row figure with a panel per side present in ``df["side"]`` (users, then items;
    titled "users"/"items", shared y-axis), and those sides in panel order."""
    sides = [s for s in SIDES if (df["side"] == s).any()]
    fig = make_subplots(rows=1, cols=len(sides), subplot_titles=[f"{s}s" for s in sides], shared_yaxes=True)
    return fig, sides


def task_line(task: str, color: str, shown: set[str], x: Any, y: Any, **kwargs: Any) -> go.Scatter:
    """A lines+markers trace of ``task`` in ``color`` and the task's legend group, listed in the
    legend unless ``task`` is in ``shown`` (one entry per task across panels). ``kwargs`` go to
    ``go.Scatter`` (``mode``, ``name`` default to lines+markers and the task; ``line`` is merged)."""
    kwargs.setdefault("mode", "lines+markers")
    kwargs.setdefault("name", task)
    line = {"color": color, **kwargs.pop("line", {})}
    return go.Scatter(x=x, y=y, legendgroup=task, showlegend=task not in shown, line=line, **kwargs)
