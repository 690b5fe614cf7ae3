"""Helpers shared by the figure builders: placeholder figures, task colors, column checks,
per-side panels, per-task lines and readable log axes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
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


# ---------------------------------------------------------------------------------------------
# log axes

#: Tick sets of a log axis from sparse to dense: within each power of ten, these mantissas.
_LOG_MANTISSAS: tuple[tuple[int, ...], ...] = ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9))
_SUPERSCRIPTS = str.maketrans(
    "0123456789-", "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b"
)
#: Below this many powers of ten (a factor ~3) a log axis gets round, evenly spaced ticks.
_NARROW_DECADES = 0.5


def tick_label(value: float) -> str:
    """``value`` as a tick label that says the whole number: ``20``, ``0.005``, ``1.5``, and powers of
    ten below 0.001 or from 100000 up as ``10⁻⁵`` / ``2×10⁻⁵`` (never the bare digit plotly puts
    between powers of ten)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exp = math.floor(math.log10(abs(value)) + 1e-9)
    if -3 <= exp < 5:
        return f"{value:.6g}"
    mantissa = f"{value / 10.0**exp:.6g}"
    if mantissa == "10":
        mantissa, exp = "1", exp + 1
    power = "10" + str(exp).translate(_SUPERSCRIPTS)
    return power if mantissa == "1" else f"{mantissa}\u00d7{power}"


def _inside(ticks: Sequence[float], lo: float, hi: float) -> list[float]:
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def _with_neighbours(ticks: Sequence[float], lo: float, hi: float) -> list[float]:
    """The ticks within [lo, hi] and the nearest one on each side (shown where autorange pads)."""
    below = [t for t in ticks if t < lo * (1 - 1e-9)]
    above = [t for t in ticks if t > hi * (1 + 1e-9)]
    return below[-1:] + _inside(ticks, lo, hi) + above[:1]


def _linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round, evenly spaced ticks over a range narrower than a factor ~3 (``1.2, 1.3, ...``)."""
    span = hi - lo
    if span <= 0:
        return [float(f"{lo:.3g}")]
    magnitude = 10.0 ** math.floor(math.log10(span / target))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if span / (m * magnitude) <= target + 1)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [float(f"{k * step:.12g}") for k in range(first, last + 1) if k * step > 0]


def log_ticks(values: Iterable[float], max_ticks: int = 8) -> tuple[list[float], list[str]]:
    """Tick values and labels (:func:`tick_label`) for a log axis over ``values``.

    Of the powers of ten (every one, or every k-th over many), 1-2-5 per power and every digit per
    power, the densest set that puts 3 to ``max_ticks`` ticks within the data; over a range
    narrower than a factor ~3 (1.2 to 1.5), or one no set fits, round evenly spaced ticks.
    Non-positive and non-finite values are left out; none left: ``([], [])`` (plotly's own ticks).
    """
    if not isinstance(values, np.ndarray | pd.Series):
        values = list(values)
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr) & (arr > 0)]
    if arr.size == 0:
        return [], []
    lo, hi = float(arr.min()), float(arr.max())
    e_lo, e_hi = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    candidates: list[list[float]] = [
        [float(f"1e{e}") for e in range(e_lo - step, e_hi + step + 1) if e % step == 0]
        for step in range(max(1, e_hi - e_lo), 0, -1)
    ]
    candidates += [
        [float(f"{m}e{e}") for e in range(e_lo - 1, e_hi + 1) for m in mantissas]
        for mantissas in _LOG_MANTISSAS
    ]
    fitting = [c for c in candidates if 3 <= len(_inside(c, lo, hi)) <= max_ticks]
    if fitting and math.log10(hi / lo) >= _NARROW_DECADES:
        ticks = _with_neighbours(fitting[-1], lo, hi)
    else:
        ticks = _linear_ticks(lo, hi)
    ticks = sorted(set(ticks))
    return ticks, [tick_label(t) for t in ticks]


def log_axis(
    fig: go.Figure, letter: Literal["x", "y"], values: Iterable[float], **selector: Any
) -> go.Figure:
    """Make the ``letter`` axes of ``fig`` that ``selector`` picks (``row=``, ``col=``; none: every
    panel, so panels sharing an axis stay alike) log-scaled, with :func:`log_ticks` over ``values``
    (the data drawn on them) as their ticks. Returns ``fig``."""
    tickvals, ticktext = log_ticks(values)
    settings: dict[str, Any] = {"type": "log"}
    if tickvals:
        settings.update(tickmode="array", tickvals=tickvals, ticktext=ticktext)
    update = fig.update_yaxes if letter == "y" else fig.update_xaxes
    update(**settings, **selector)
    return fig
