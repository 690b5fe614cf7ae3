"""Log axes of the shared figures carry readable tick labels (issue 26, item 3).

plotly's automatic log ticks label the 2s and 5s (or every digit) between powers of ten with the
bare digit, so an axis read top to bottom says "100 5 2 10 5 2 1". Every log axis of these
figures sets its ticks itself: each label is the whole number it marks ("20", "0.005", "2×10⁻⁵"),
on every panel that shares the axis (the items panel is log too, not a linear copy).

Checked on the figures' layouts, built from hand-made tables that span a narrow range, one to
three powers of ten and many: no kernel, no browser, no training.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from pmtrec_lab import viz
from pmtrec_lab.viz._common import log_ticks, tick_label

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")


def _label_value(text: str) -> float:
    """The number a tick label says: "20", "0.005", "10⁻⁵", "2×10⁻⁵" (and nothing else)."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)×)?10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)", text)
    if match:
        return float(match.group(1) or 1) * 10.0 ** int(match.group(2).translate(_SUPERSCRIPT))
    assert re.fullmatch(r"\d+(?:\.\d+)?", text), f"unreadable tick label {text!r}"
    return float(text)


def _log_axes(fig: go.Figure, letter: str) -> dict[str, go.layout.XAxis | go.layout.YAxis]:
    """Layout axes of ``letter`` ("x"/"y") that hold at least one trace, by axis id (y, y2, ...)."""
    used = {getattr(t, f"{letter}axis") or letter for t in fig.data}
    return {ref: fig.layout[ref.replace(letter, f"{letter}axis", 1)] for ref in sorted(used)}


def _values_on(fig: go.Figure, letter: str, ref: str) -> np.ndarray:
    values = [
        np.asarray(getattr(t, letter), float)
        for t in fig.data
        if (getattr(t, f"{letter}axis") or letter) == ref
    ]
    return np.concatenate(values) if values else np.array([])


def _epochs_table(metric: str, values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [
        {"epoch": e + 1, "task": task, "side": side, "metric": metric, "value": v}
        for (task, side), series in values.items()
        for e, v in enumerate(series)
    ]
    return pd.DataFrame(rows)


def _ratio_table(lo: float, hi: float) -> pd.DataFrame:
    """PMTRec-style ratios: the main task at 1 on both sides, one auxiliary task per side."""
    before = {
        ("rec", "user"): [1.0, 1.0, 1.0],
        ("rec", "item"): [1.0, 1.0, 1.0],
        ("social", "user"): [hi, (hi * lo) ** 0.5, lo],
        ("label", "item"): [hi * 0.9, hi * 0.7, hi * 0.5],
    }
    after = {k: [1.0 + (x - 1.0) * 0.5 for x in v] for k, v in before.items()}
    return pd.concat([_epochs_table("norm_ratio_before", before), _epochs_table("norm_ratio_after", after)])


def _grad_norm_table(lo: float, hi: float) -> pd.DataFrame:
    return _epochs_table(
        "grad_norm",
        {
            ("rec", "user"): [hi, hi / 2, hi / 3],
            ("rec", "item"): [hi / 4, hi / 5, hi / 6],
            ("social", "user"): [lo * 3, lo * 2, lo],
            ("label", "item"): [lo * 5, lo * 4, lo * 3],
        },
    )


def _weights_vs_activity(lo: float, hi: float) -> go.Figure:
    rng = np.random.default_rng(0)
    n = 200
    activity = np.exp(rng.uniform(np.log(lo), np.log(hi), n)).round().clip(min=1)
    rows, act = [], []
    for side in ("user", "item"):
        for entity in range(n):
            w = rng.uniform(0.2, 0.8)
            rows += [
                {"epoch": 1, "side": side, "entity": entity, "task": "rec", "weight": w, "steps": 3},
                {"epoch": 1, "side": side, "entity": entity, "task": "aux", "weight": 1 - w, "steps": 3},
            ]
            act.append({"side": side, "entity": entity, "activity": activity[entity]})
    return viz.weights_vs_activity(pd.DataFrame(rows), pd.DataFrame(act))


#: (figure, axis letter, the range of its data): narrow, within a few powers of ten, and wide
FIGURES = {
    "norm ratio, 1 to 1.5": (lambda: viz.norm_ratio_over_epochs(_ratio_table(1.2, 1.5)), "y"),
    "norm ratio, 0.01 to 14": (lambda: viz.norm_ratio_over_epochs(_ratio_table(0.01, 14.0)), "y"),
    "norm ratio, 1e-5 to 300": (lambda: viz.norm_ratio_over_epochs(_ratio_table(1e-5, 300.0)), "y"),
    "grad norm, 2e-3 to 3e-3": (lambda: viz.grad_norm_over_epochs(_grad_norm_table(2.2e-3, 3e-3)), "y"),
    "grad norm, 1e-4 to 0.5": (lambda: viz.grad_norm_over_epochs(_grad_norm_table(1e-4, 0.5)), "y"),
    "weights vs activity, 2 to 20": (lambda: _weights_vs_activity(2, 20), "x"),
    "weights vs activity, 1 to 800": (lambda: _weights_vs_activity(1, 800), "x"),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_log_axis_labels_its_ticks_with_whole_numbers(name):
    build, letter = FIGURES[name]
    fig = build()
    axes = {ref: ax for ref, ax in _log_axes(fig, letter).items() if _values_on(fig, letter, ref).size}
    log_axes = {ref: ax for ref, ax in axes.items() if ax.type == "log"}
    assert log_axes, f"{name}: no log axis"
    # a panel beside a log panel, over the same kind of values, is log too (users and items)
    interaction_axes = {ref for ref in axes if ref in (letter, f"{letter}2")}
    assert interaction_axes <= set(log_axes), f"{name}: linear panel beside a log one: {axes}"
    for ref, ax in log_axes.items():
        # panels whose axes match (shared y) show the union of their data
        group = {ref, ax.matches} | {r for r, other in log_axes.items() if other.matches == ref}
        data = np.concatenate([_values_on(fig, letter, r) for r in group if r])
        data = data[np.isfinite(data) & (data > 0)]
        assert ax.tickmode == "array" and ax.tickvals and ax.ticktext, f"{name} {ref}: automatic log ticks"
        vals = np.asarray(ax.tickvals, float)
        said = np.array([_label_value(t) for t in ax.ticktext])
        np.testing.assert_allclose(said, vals, rtol=1e-9, err_msg=f"{name} {ref}: a label is not its value")
        assert np.all(np.diff(vals) > 0) and len(set(ax.ticktext)) == len(ax.ticktext)
        inside = vals[(vals >= data.min() * (1 - 1e-9)) & (vals <= data.max() * (1 + 1e-9))]
        assert 2 <= len(inside) <= 10, f"{name} {ref}: {len(inside)} ticks over {data.min()}..{data.max()}"


@pytest.mark.parametrize(
    ("value", "label"),
    [(20.0, "20"), (0.005, "0.005"), (1.0, "1"), (0.3, "0.3"), (1e-5, "10⁻⁵"), (2e-5, "2×10⁻⁵")]
    + [(1e6, "10⁶"), (123456.0, "1.23456×10⁵")],
)
def test_tick_label_writes_the_whole_number(value, label):
    assert tick_label(value) == label


@pytest.mark.parametrize(("lo", "hi"), [(1.0, 1.0), (0.9, 1.1), (3.0, 9.0), (1.0, 100.0), (1e-9, 1e3)])
def test_log_ticks_cover_the_range_with_a_few_labels(lo, hi):
    vals, text = log_ticks([lo, hi])
    inside = [v for v in vals if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]
    assert 1 <= len(inside) <= 10 and (len(inside) >= 2 or lo == hi)
    assert [_label_value(t) for t in text] == pytest.approx(vals, rel=1e-9)
    assert log_ticks([]) == ([], []) and log_ticks([0.0, -1.0, float("nan")]) == ([], [])
