"""The report's ``index.html``: the page a person opens first.

In order: the title and whether every notebook ran; the headline (test NDCG@20 of the report's
main run, beside it the single-task and EW runs where the report trains them); how numbers are
shown; the common parameters and one row per notebook (status, duration, its own parameters,
files); then each notebook's recorded values as small tables.

Numbers. Ranking metrics (NDCG@k, Recall@k, ... and differences of them) are shown x100 with 2
decimals, other decimals to 4 significant digits, integers (counts, epochs, ids) exactly. The
full-precision values stay in ``index.json`` and each ``<notebook>.values.json``: the page is for
people, the JSON for scripts and tests.

Tables. A notebook's scalar values form one "values" table. Dicts keyed ``"<side>/<task>"``,
``"<grouping>/<group>"`` (user groups) or ``"<dataset>/<method>"`` are merged, per key kind, into
one table with a column per dict; dicts keyed by side (``user``/``item``) or dataset likewise;
a dict of dicts (``wilcoxon``) is a table with a row per outer key; any other dict is a small
key/value table of its own.

The headline. The main run is notebook ``01_train_and_evaluate``'s (else the first notebook that
recorded ``test_ndcg@20`` with a method; else the small grid's ``pmtrec``). The single-task and
EW cards come first from the main run's own reference runs (notebook 01 records them under
``references``: the main run's configuration with only the method replaced, see
:mod:`pmtrec_lab.reports.references`), else from notebook 06 when it trained its small grid
(``source == "small grid"``, the same common parameters as the main run). Committed result
tables follow another protocol (epochs, learning rate chosen per method), so they are never set
beside the main run. Every inserted text is escaped.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: One entry of ``index.json`` (``ReportEntry.to_dict()``).
Entry = Mapping[str, Any]

__all__ = ["HEADLINE_METRIC", "fmt_value", "headline", "is_metric", "render_index"]

#: The metric the headline shows (the key notebooks 01/05 and the grid record it under).
HEADLINE_METRIC = "test_ndcg@20"
#: The notebook whose run is the report's main run.
MAIN_NOTEBOOK = "01_train_and_evaluate"
#: Runs set beside the main run when the report trains them: (method, label).
COMPARED_METHODS: tuple[tuple[str, str], ...] = (("single-task", "single-task"), ("ew", "EW (equal weights)"))
SMALL_GRID_SOURCE = "small grid"
#: Where a train notebook records its reference runs' headlines (``reference_headlines``).
REFERENCES_KEY = "references"
#: ``compared[i]["source"]``: the main run's own reference run, or the small grid's mean.
FROM_REFERENCES, FROM_SMALL_GRID = "reference run", SMALL_GRID_SOURCE

NUMBER_CONVENTION = (
    "Ranking metrics (NDCG@k, Recall@k and differences of them) are shown \u00d7100 with 2 decimals; "
    "other decimals to 4 significant digits; counts, epochs and ids exactly; \u2014 means not recorded. "
    "Full-precision values: index.json and each notebook's values file."
)

_METRIC = re.compile(r"(?:^|[_/ \-])(ndcg|recall|precision|hr|hit|mrr)@?\d*(?:$|[_/ \-])", re.IGNORECASE)
#: Keys whose values are differences of a ranking metric (``compare``'s Wilcoxon table).
_METRIC_DIFF_KEYS = frozenset({"mean_diff"})
_SIDES = frozenset({"user", "item"})
_EMPTY = "\u2014"
_X100 = " \u00d7100"


def is_metric(name: str) -> bool:
    """True if the value recorded under ``name`` is a ranking metric (shown x100)."""
    return name in _METRIC_DIFF_KEYS or _METRIC.search(name) is not None


def _sig4(v: float) -> str:
    if v == 0:
        return "0"
    text = f"{v:.4g}"
    return "0" if text in ("-0", "0") else text


def fmt_value(value: Any, metric: bool = False) -> str:
    """One recorded value as text (not escaped): the number convention of the page."""
    if value is None:
        return _EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if metric:
            text = f"{100 * value:.2f}"
            return "0.00" if text == "-0.00" else text
        return _sig4(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return "; ".join(f"{k}: {fmt_value(v, metric or is_metric(str(k)))}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(fmt_value(v, metric) for v in value) if value else "none"
    return str(value)


#: Captions of tables whose recorded key alone says too little.
CAPTIONS: dict[str, str] = {
    "wilcoxon": "Wilcoxon signed-rank test, PMTRec vs the strongest baseline (per-user test NDCG@20)",
    "controls": "explorer controls",
}


def pretty(name: str) -> str:
    """A readable column or row label for a recorded key (``test_ndcg@20`` -> ``test NDCG@20``)."""
    if name in CAPTIONS:
        return CAPTIONS[name]
    text = re.sub(r"^groups_", "test ", name)  # train_headlines: test metric by user group
    text = text.replace("_", " ")
    text = re.sub(r"\bndcg@?(\d+)", r"NDCG@\1", text, flags=re.IGNORECASE)
    text = re.sub(r"\brecall@?(\d+)", r"Recall@\1", text, flags=re.IGNORECASE)
    return text


def _label(name: str) -> str:
    return pretty(name) + (_X100 if is_metric(name) else "")


# ---------------------------------------------------------------------------------------------
# HTML pieces (every text goes through html.escape here)


def _e(text: Any) -> str:
    return html.escape(str(text))


def _td(value: Any, metric: bool = False) -> str:
    cls = "num" if isinstance(value, int | float) and not isinstance(value, bool) else ""
    if value is None:
        cls = "muted"
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{_e(fmt_value(value, metric))}</td>"


def _table(caption: str, header: Sequence[str], rows: Sequence[str], cls: str = "values") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return (
        f'<table class="{cls}"><caption>{_e(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def _is_scalar_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_scalar(x) for x in v)


def _pair_kind(name: str, keys: Sequence[str], datasets: set[str]) -> tuple[str, tuple[str, str]]:
    """(caption, column labels) of a dict keyed ``"a/b"``."""
    firsts = {k.split("/", 1)[0] for k in keys}
    if name.startswith("groups_"):
        return "per user group", ("grouping", "group")
    if firsts <= _SIDES:
        return "per side and task", ("side", "task")
    if datasets and firsts <= datasets:
        return "per dataset and method", ("dataset", "method")
    return f"by {pretty(name)}", ("", "")


def _values_tables(values: Mapping[str, Any]) -> list[str]:
    """The tables showing one notebook's recorded ``values`` (module docstring)."""
    datasets = (
        {str(d) for d in values.get("datasets", []) if isinstance(d, str)}
        if isinstance(values.get("datasets"), list)
        else set()
    )
    summary: list[str] = []
    # kind -> (labels or None, ordered row keys, {dict name: dict})
    merged: dict[str, tuple[tuple[str, ...], list[str], dict[str, Mapping[str, Any]]]] = {}
    nested: list[str] = []
    singles: list[str] = []

    def merge(kind: str, labels: tuple[str, ...], name: str, d: Mapping[str, Any]) -> None:
        _, order, cols = merged.setdefault(kind, (labels, [], {}))
        order.extend(k for k in d if k not in order)
        cols[name] = d

    for name, value in values.items():
        if _is_scalar(value) or _is_scalar_list(value) or (isinstance(value, Mapping) and not value):
            summary.append(f"<tr><th>{_e(_label(name))}</th>{_td(value, is_metric(name))}</tr>")
        elif isinstance(value, Mapping) and all(_is_scalar(v) for v in value.values()):
            keys = [str(k) for k in value]
            if all("/" in k for k in keys):
                caption, labels = _pair_kind(name, keys, datasets)
                merge(caption, labels, name, value)
            elif set(keys) <= _SIDES:
                merge("per side", ("side",), name, value)
            elif datasets and set(keys) <= datasets:
                merge("per dataset", ("dataset",), name, value)
            else:
                metric = is_metric(name)
                rows = [
                    f"<tr><th>{_e(k)}</th>{_td(x, metric or is_metric(k))}</tr>" for k, x in value.items()
                ]
                singles.append(_table(pretty(name), ("", "value"), rows))
        elif isinstance(value, Mapping) and all(
            isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values()) for v in value.values()
        ):
            inner: list[str] = []
            for sub in value.values():
                inner.extend(str(k) for k in sub if str(k) not in inner)
            rows = [
                f"<tr><th>{_e(outer)}</th>" + "".join(_td(sub.get(k), is_metric(k)) for k in inner) + "</tr>"
                for outer, sub in value.items()
            ]
            first = "dataset" if datasets and set(value) <= datasets else ""
            nested.append(_table(pretty(name), (first, *(_label(k) for k in inner)), rows))
        else:  # deeper nesting: one line of text, numbers still rounded
            summary.append(f"<tr><th>{_e(_label(name))}</th>{_td(fmt_value(value, is_metric(name)))}</tr>")

    tables = [_table("values", ("", "value"), summary)] if summary else []
    for caption, (labels, order, cols) in merged.items():
        names = list(cols)
        rows = []
        for key in order:
            parts = key.split("/", 1) if len(labels) == 2 else [key]
            cells = "".join(f"<th>{_e(p)}</th>" for p in parts)
            cells += "".join(_td(cols[n].get(key), is_metric(n)) for n in names)
            rows.append(f"<tr>{cells}</tr>")
        tables.append(_table(caption, (*labels, *(_label(n) for n in names)), rows))
    return tables + nested + singles


# ---------------------------------------------------------------------------------------------
# the headline


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _ok(e: Entry) -> bool:
    return e.get("status") == "ok"


def _values(e: Entry) -> Mapping[str, Any]:
    v = e.get("values")
    return v if isinstance(v, Mapping) else {}


def headline(entries: Sequence[Entry]) -> dict[str, Any]:
    """The main run's test NDCG@20 and the compared runs the report trained (raw floats).

    ``entries`` are ``index.json`` entries (``ReportEntry.to_dict()``). Returns ``{"metric",
    "main": {notebook, run, method, dataset, value} | None, "compared": [{method, label, value,
    notebook, source} ...]}``: each compared run is the main run's own reference run when its
    notebook recorded one (``source`` "reference run"), else the small grid's (``source`` "small
    grid"); one the report did not train has value, notebook and source None. Written into
    ``index.json`` as ``headline``.
    """
    ok = [e for e in entries if _ok(e)]
    grid = next(
        (
            e
            for e in ok
            if _values(e).get("source") == SMALL_GRID_SOURCE
            and isinstance(_values(e).get(HEADLINE_METRIC), Mapping)
        ),
        None,
    )
    candidates = [e for e in ok if e.get("name") == MAIN_NOTEBOOK]
    candidates += [e for e in ok if e.get("name") != MAIN_NOTEBOOK]
    main: dict[str, Any] | None = None
    main_entry: Entry | None = None
    for e in candidates:
        v = _values(e)
        value = _number(v.get(HEADLINE_METRIC))
        if value is not None and isinstance(v.get("method"), str):
            main_entry = e
            main = {
                "notebook": e.get("name"),
                "run": v.get("run"),
                "method": v["method"],
                "dataset": v.get("dataset"),
                "value": value,
            }
            break
    grid_values: Mapping[str, Any] = _values(grid)[HEADLINE_METRIC] if grid is not None else {}
    if main is None and grid is not None:
        datasets = _values(grid).get("datasets") or []
        value = _number(grid_values.get(f"{datasets[0]}/pmtrec")) if datasets else None
        if value is not None:
            main = {
                "notebook": grid.get("name"),
                "run": None,
                "method": "pmtrec",
                "dataset": datasets[0],
                "value": value,
            }
    references: Mapping[str, Any] = {}
    if main is not None and main_entry is not None:
        recorded = _values(main_entry).get(REFERENCES_KEY)
        references = recorded if isinstance(recorded, Mapping) else {}
    compared = []
    for method, label in COMPARED_METHODS:
        value, notebook, source = None, None, None
        if main is not None:
            value = _number(references.get(f"{HEADLINE_METRIC}_{method}"))
            if value is not None:
                notebook, source = main["notebook"], FROM_REFERENCES
            elif grid is not None:
                value = _number(grid_values.get(f"{main['dataset']}/{method}"))
                if value is not None:
                    notebook, source = grid.get("name"), FROM_SMALL_GRID
        compared.append(
            {"method": method, "label": label, "value": value, "notebook": notebook, "source": source}
        )
    return {"metric": HEADLINE_METRIC, "main": main, "compared": compared}


def _headline_html(head: Mapping[str, Any], titles: Mapping[str, str]) -> str:
    metric = head["metric"]
    title = f"Headline \u00b7 {_label(metric)}"
    main = head["main"]
    if main is None:
        return (
            f'<section class="headline"><h2>{_e(title)}</h2>'
            '<p class="muted">No notebook of this report recorded a test NDCG@20 '
            "(notebook 01 does, and 06 with run_small_grid=True).</p></section>"
        )
    where = titles.get(main["notebook"], main["notebook"])
    sub = f"{main['method']} on {main['dataset']}"
    if main.get("run"):
        sub += f" \u00b7 run {main['run']}"
    cards = [
        '<div class="card main">'
        f'<div class="label">main run: {_e(main["method"])}</div>'
        f'<div class="big">{_e(fmt_value(main["value"], True))}</div>'
        f'<div class="sub">{_e(sub)}<br>from {_e(where)}</div></div>'
    ]
    for c in head["compared"]:
        if c["value"] is None:
            cards.append(
                '<div class="card absent">'
                f'<div class="label">{_e(c["label"])}</div><div class="big">{_EMPTY}</div>'
                '<div class="sub">not trained by this report (notebook 01 trains it beside the main '
                "run; 06 with run_small_grid=True "
                f"and &quot;{_e(c['method'])}&quot; in grid_methods)</div></div>"
            )
            continue
        diff = fmt_value(main["value"] - c["value"], True)
        diff = diff if diff.startswith("-") else f"+{diff}"
        kind = "same setting" if c.get("source") == FROM_REFERENCES else "small grid"
        cards.append(
            '<div class="card">'
            f'<div class="label">{_e(c["label"])}</div>'
            f'<div class="big">{_e(fmt_value(c["value"], True))}</div>'
            f'<div class="sub">main run \u2212 this: {_e(diff)}<br>'
            f"from {_e(titles.get(c['notebook'], c['notebook']))} ({kind})</div></div>"
        )
    sources = {c.get("source") for c in head["compared"] if c["value"] is not None}
    notes = []
    if FROM_REFERENCES in sources:
        notes.append(
            "Same setting: the main run's configuration with only the method replaced (same data, "
            "split, encoder, epochs, learning rate and seed), one run each: test metrics that show "
            "the setting and choose nothing."
        )
    if FROM_SMALL_GRID in sources:
        notes.append(
            "Small-grid runs use the report's common parameters (data, encoder, dim, epochs, "
            "learning rate) and are averaged over the grid's seeds."
        )
    note = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    return (
        f'<section class="headline"><h2>{_e(title)}</h2>'
        f'<div class="cards">{"".join(cards)}</div>{note}</section>'
    )


# ---------------------------------------------------------------------------------------------
# the page


_INDEX_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: .2rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { margin: 1.6rem 0 .4rem; }
a { color: #1558b0; }
.ok { color: #137333; font-weight: 600; }
.failed { color: #b00020; font-weight: 600; }
.error { color: #b00020; white-space: pre-wrap; font-family: monospace; font-size: .85em; margin: .3rem 0 0; }
.muted { color: #888; }
.note, .convention { color: #555; font-size: .9em; }
.convention { background: #f7f7f4; border-left: 3px solid #c9c9c0; padding: .4rem .7rem; }
.headline .cards { display: flex; flex-wrap: wrap; gap: 1rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .7rem 1rem; min-width: 14rem; max-width: 22rem; }
.card.main { border-color: #1558b0; background: #f3f7fd; }
.card.absent { color: #888; }
.card .label { font-weight: 600; }
.card .big { font-size: 2.2rem; font-variant-numeric: tabular-nums; }
.card .sub { font-size: .85em; color: #555; overflow-wrap: anywhere; }
table { border-collapse: collapse; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; color: #444; }
th, td { border-bottom: 1px solid #e3e3e3; padding: .25rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #f5f5f5; }
tbody th { font-weight: normal; color: #444; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
table.overview { width: 100%; }
.tables { display: flex; flex-wrap: wrap; gap: .8rem 2rem; align-items: flex-start; }
.params { font-size: .9em; }
table.params { margin-bottom: 1rem; }
table.params td.num { text-align: left; }
a.small { font-size: .75em; font-weight: normal; margin-left: .4rem; }
"""


def _overview_row(e: Entry, own: Mapping[str, Any]) -> str:
    ok = _ok(e)
    status = f'<span class="{"ok" if ok else "failed"}">{"ok" if ok else "failed"}</span>'
    error = e.get("error")
    if error:
        err = error if len(error) <= 2000 else error[:2000] + " \u2026"
        status += f'<div class="error">{_e(err)}</div>'
    links = " \u00b7 ".join(
        f'<a href="{_e(e[key])}">{label}</a>'
        for key, label in (("html", "page"), ("ipynb", "notebook"), ("values_json", "values"))
        if e.get(key)
    )
    title = _e(e.get("title") or e.get("name"))
    name_cell = f'<a href="{_e(e["html"])}">{title}</a>' if e.get("html") else title
    params = "; ".join(f"{k} = {fmt_value(v)}" for k, v in own.items())
    params_cell = f'<td class="params">{_e(params)}</td>' if params else '<td class="muted">common only</td>'
    duration = _number(e.get("duration_s")) or 0.0
    return (
        "<tr>"
        f'<td>{name_cell}<div class="muted">{_e(e.get("name"))}</div></td>'
        f"<td>{status}</td>"
        f'<td class="num">{duration:.1f} s</td>'
        f"{params_cell}"
        f"<td>{links or '<span class=muted>none</span>'}</td>"
        "</tr>"
    )


def _common_parameters(entries: Sequence[Entry]) -> dict[str, Any]:
    """Parameters every notebook got with the same value (shown once); {} for fewer than two."""
    if len(entries) < 2:
        return {}
    first = entries[0].get("parameters") or {}
    rest = [e.get("parameters") or {} for e in entries[1:]]
    return {k: v for k, v in first.items() if all(k in p and p[k] == v for p in rest)}


def render_index(data: Mapping[str, Any]) -> str:
    """The text of ``index.html`` from the ``index.json`` payload (``title``, ``generated_at``,
    ``ok``, ``entries`` and, optional, ``headline``); what it shows, in order: module docstring."""
    entries: list[Entry] = list(data.get("entries") or [])
    title = str(data.get("title") or "pmtrec-lab report")
    head = data.get("headline") or headline(entries)
    titles = {str(e.get("name")): str(e.get("title") or e.get("name")) for e in entries}
    n_failed = sum(not _ok(e) for e in entries)
    summary = (
        f'<span class="ok">all {len(entries)} notebooks ok</span>'
        if data.get("ok", n_failed == 0)
        else f'<span class="failed">{n_failed} of {len(entries)} notebooks failed</span>'
    )
    common = _common_parameters(entries)
    common_html = ""
    if common:
        rows = [f"<tr><th>{_e(k)}</th>{_td(v)}</tr>" for k, v in common.items()]
        common_html = _table("common parameters (every notebook)", ("parameter", "value"), rows, cls="params")
    overview = [
        _overview_row(e, {k: v for k, v in (e.get("parameters") or {}).items() if k not in common})
        for e in entries
    ]

    sections = []
    for e in entries:
        link = f' <a class="small" href="{_e(e["html"])}">page</a>' if e.get("html") else ""
        status = "" if _ok(e) else ' <span class="failed">failed</span>'
        tables = _values_tables(_values(e))
        body = f'<div class="tables">{"".join(tables)}</div>' if tables else ""
        body = body or '<p class="muted">no values recorded</p>'
        sections.append(
            f'<section class="notebook" id="values-{_e(e.get("name"))}">'
            f"<h3>{_e(titles[str(e.get('name'))])}{link}{status}</h3>{body}</section>"
        )

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{_e(title)}</title>
<style>{_INDEX_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p>{summary} \u00b7 generated {_e(data.get("generated_at", ""))} \u00b7
data: <a href="index.json">index.json</a></p>
{_headline_html(head, titles)}
<p class="convention">{_e(NUMBER_CONVENTION)}</p>
<h2>Notebooks</h2>
{common_html}
<table class="overview">
<thead><tr><th>Notebook</th><th>Status</th><th>Duration</th><th>Own parameters</th><th>Files</th></tr></thead>
<tbody>
{chr(10).join(overview)}
</tbody>
</table>
<h2>Recorded values</h2>
{chr(10).join(sections)}
</body>
</html>
"""
