"""The report's index.html, built from a small recorded payload (no kernel, no training): rounded
numbers, the headline before any table, per-task and per-group tables, escaped values, and an
index.json that keeps every recorded value exactly."""

from __future__ import annotations

import copy
import html
import json
import re
from html.parser import HTMLParser

import pytest

from pmtrec_lab.reports.index_html import fmt_value, headline, is_metric, render_index
from pmtrec_lab.reports.runner import ReportEntry, write_index

RUN = "synthetic-pmtrec-ea760f70693e"
EVIL = "<script>alert(1)</script>"


def _entry(name: str, title: str, values: dict, parameters: dict | None = None, **kw) -> dict:
    return {
        "name": name,
        "title": title,
        "source": f"/nb/{name}.ipynb",
        "status": "ok",
        "duration_s": 12.345678,
        "parameters": {"dataset": "synthetic", "dim": 8, "lr": 0.0030000000000000001, **(parameters or {})},
        "values": values,
        "html": f"{name}.html",
        "ipynb": f"{name}.ipynb",
        "values_json": f"{name}.values.json",
        "error": None,
        "ename": None,
        "evalue": None,
        "failed_cell": None,
        **kw,
    }


TRAIN = {
    "run": RUN,
    "dataset": "synthetic",
    "method": "pmtrec",
    "test_ndcg@20": 0.1272964592946183,
    "test_recall@20": 0.325,
    "valid_ndcg@20": 0.06845940124907393,
    "best_epoch": 1,
    "epochs_run": 2,
    "train_seconds": 0.14749345299969718,
    "groups_ndcg@20": {
        "activity/cold": 0.17924221184377043,
        "activity/active": 0.12978212356854685,
        "social/without_links": None,
    },
}
WEIGHTS = {
    "weights_recorded": True,
    "mean_weight": {"user/rec": 0.54757159948349, "user/social:friends": 0.45242834091186523},
    "weight_std": {"user/rec": 0.09312290698289871, "user/social:friends": 0.09312289953231812},
    "conflict_fraction_combined": {"user": 0.1, "item": 0.4805194805194805},
    "entity": 59,
    "note": EVIL,
}
GRID = {
    "results_found": True,
    "source": "small grid",
    "datasets": ["synthetic"],
    "methods": ["single-task", "ew", "pmtrec"],
    "test_ndcg@20": {
        "synthetic/single-task": 0.1284478038614255,
        "synthetic/ew": 0.12523181216176613,
        "synthetic/pmtrec": 0.1272964592946183,
    },
    "strongest_baseline": {"synthetic": "single-task"},
    "wilcoxon": {
        "synthetic": {
            "baseline": "single-task",
            "p_value": 0.6214496598655868,
            "mean_diff": -0.001151344566807219,
            "n": 120,
        }
    },
}


def _payload(grid: dict | None = None) -> dict:
    entries = [
        _entry("01_train_and_evaluate", "01 · Train and evaluate", copy.deepcopy(TRAIN)),
        _entry("02_task_weights", f"02 · Weights {EVIL}", copy.deepcopy(WEIGHTS), {"entity": 59}),
        _entry(
            "06_method_comparison",
            "06 · Method comparison",
            copy.deepcopy(GRID if grid is None else grid),
            {"run_small_grid": True},
        ),
    ]
    return {
        "title": "demo report",
        "generated_at": "2026-01-02T03:04:05+00:00",
        "ok": True,
        "entries": entries,
    }


class _Tables(HTMLParser):
    """Every <table>: its caption and its rows as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "caption":
            self._caption = True
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "caption":
            self._caption = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._caption:
            self.tables[-1]["caption"] += data
        elif self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> dict[str, list[list[str]]]:
    """Caption -> rows of the FIRST table with that caption (notebooks come in page order)."""
    parser = _Tables()
    parser.feed(page)
    out: dict[str, list[list[str]]] = {}
    for t in parser.tables:
        out.setdefault(t["caption"], t["rows"])
    return out


def _text(page: str) -> str:
    body = page[page.index("<body>") :]
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def _significant_digits(number: str) -> int:
    return len(number.replace(".", "").lstrip("0"))


@pytest.fixture()
def page() -> str:
    return render_index(_payload())


def test_no_number_has_more_than_six_significant_digits(page):
    numbers = re.findall(r"\d+(?:\.\d+)?", _text(page))
    assert numbers
    too_long = [n for n in numbers if _significant_digits(n) > 6]
    assert not too_long, too_long
    assert "0.1272964592946183" not in page and "0.12729" not in page


def test_headline_comes_first_with_main_single_task_and_ew(page):
    text = _text(page)
    assert page.index("Headline") < page.index("<table")
    head = text[text.index("Headline") : text.index("Ranking metrics")]
    assert "main run: pmtrec" in head and "12.73" in head and RUN in head
    assert (
        head.index("12.73")
        < head.index("single-task")
        < head.index("12.84")
        < head.index("EW")
        < head.index("12.52")
    )
    assert "-0.12" in head and "+0.21" in head  # main run minus single-task / EW, x100
    # the number convention is said on the page
    assert "×100 with 2 decimals" in text and "4 significant digits" in text


def test_per_task_and_per_group_tables_hold_the_rounded_numbers(page):
    tables = _tables(page)
    groups = tables["per user group"]
    assert groups[0] == ["grouping", "group", "test NDCG@20 ×100"]
    assert groups[1:] == [
        ["activity", "cold", "17.92"],
        ["activity", "active", "12.98"],
        ["social", "without_links", "—"],
    ]
    tasks = tables["per side and task"]
    assert tasks[0] == ["side", "task", "mean weight", "weight std"]
    assert tasks[1:] == [
        ["user", "rec", "0.5476", "0.09312"],
        ["user", "social:friends", "0.4524", "0.09312"],
    ]
    assert tables["per side"][1:] == [["user", "0.1"], ["item", "0.4805"]]
    grid = tables["per dataset and method"]
    assert ["synthetic", "ew", "12.52"] in grid and ["synthetic", "pmtrec", "12.73"] in grid
    wilcoxon = next(rows for caption, rows in tables.items() if caption.startswith("Wilcoxon"))
    assert wilcoxon[0] == ["dataset", "baseline", "p value", "mean diff ×100", "n"]
    assert wilcoxon[1] == ["synthetic", "single-task", "0.6214", "-0.12", "120"]
    # 01's scalar values: metrics x100, other decimals 4 significant digits, counts exact
    values = dict(row for row in tables["values"][1:] if row[0] != "")
    assert values["test NDCG@20 ×100"] == "12.73" and values["test Recall@20 ×100"] == "32.50"
    assert values["train seconds"] == "0.1475" and values["best epoch"] == "1"
    # the common parameters are shown once, rounded
    assert ["lr", "0.003"] in tables["common parameters (every notebook)"]


def test_inserted_values_are_escaped(page):
    assert EVIL not in page
    assert html.escape(EVIL) in page  # the recorded value and the notebook title, shown as text
    assert page.count("<script") == 0


def test_committed_results_are_not_set_beside_the_main_run():
    grid = {**GRID, "source": "/repo/results/grid"}
    head = headline(_payload(grid)["entries"])
    assert (
        head["main"]["value"] == TRAIN["test_ndcg@20"] and head["main"]["notebook"] == "01_train_and_evaluate"
    )
    assert [c["value"] for c in head["compared"]] == [None, None]
    assert "not trained by this report" in render_index(_payload(grid))


def test_headline_falls_back_to_the_small_grid_and_says_when_there_is_none():
    payload = _payload()
    only_grid = [e for e in payload["entries"] if e["name"] == "06_method_comparison"]
    head = headline(only_grid)
    assert head["main"] == {
        "notebook": "06_method_comparison",
        "run": None,
        "method": "pmtrec",
        "dataset": "synthetic",
        "value": GRID["test_ndcg@20"]["synthetic/pmtrec"],
    }
    assert [c["value"] for c in head["compared"]] == [
        GRID["test_ndcg@20"]["synthetic/single-task"],
        GRID["test_ndcg@20"]["synthetic/ew"],
    ]
    assert headline([])["main"] is None
    assert "No notebook of this report recorded" in render_index({"entries": [], "ok": True})


def test_write_index_keeps_exact_values_and_adds_the_headline(tmp_path):
    payload = _payload()
    entries = [ReportEntry(**e) for e in payload["entries"]]
    entries[1].status, entries[1].error = "failed", f"ValueError: {EVIL}"
    index_json, index_html = write_index(entries, tmp_path, ok=False, title="demo")
    data = json.loads(index_json.read_text(encoding="utf-8"))
    assert data["entries"] == [e.to_dict() for e in entries]  # machine-readable record unchanged
    assert data["entries"][0]["values"]["test_ndcg@20"] == TRAIN["test_ndcg@20"]
    assert data["headline"]["main"]["value"] == TRAIN["test_ndcg@20"]
    page = index_html.read_text(encoding="utf-8")
    assert "1 of 3 notebooks failed" in page and html.escape(f"ValueError: {EVIL}") in page
    assert EVIL not in page


def test_number_convention():
    assert is_metric("test_ndcg@20") and is_metric("groups_ndcg@20") and is_metric("test_ndcg20")
    assert is_metric("mean_diff") and not is_metric("train_seconds") and not is_metric("p_value")
    assert fmt_value(0.1272964592946183, metric=True) == "12.73"
    assert fmt_value(-0.00001, metric=True) == "0.00"
    assert fmt_value(8.70267391204834) == "8.703" and fmt_value(123456.789) == "1.235e+05"
    assert fmt_value(999999) == "999999" and fmt_value(True) == "yes" and fmt_value(None) == "—"
    assert fmt_value([]) == "none" and fmt_value({"gmb": False, "tau": 0.333333333}) == "gmb: no; tau: 0.3333"


# --- issue 26, item 1: notebook 01 trains EW and single-task; the headline shows them ----------

#: what notebook 01 records under "references" (reports.references.reference_headlines)
REFERENCES = {
    "test_ndcg@20_pmtrec": 0.2753,
    "test_ndcg@20_ew": 0.0992,
    "test_ndcg@20_single-task": 0.2883,
    "aux_tasks_helped": False,
    "vs_single_task": 0.2753 / 0.2883 - 1,
    "vs_ew": 0.2753 / 0.0992 - 1,
}
FROM_01 = {"single-task": REFERENCES["test_ndcg@20_single-task"], "ew": REFERENCES["test_ndcg@20_ew"]}
FROM_GRID = {m: GRID["test_ndcg@20"][f"synthetic/{m}"] for m in ("single-task", "ew")}


def _with_references(references: dict | None, grid: dict | None) -> list[dict]:
    train = {**copy.deepcopy(TRAIN), "test_ndcg@20": REFERENCES["test_ndcg@20_pmtrec"]}
    if references is not None:
        train["references"] = copy.deepcopy(references)
    entries = [_entry("01_train_and_evaluate", "01 · Train and evaluate", train)]
    if grid is not None:
        entries.append(_entry("06_method_comparison", "06 · Method comparison", copy.deepcopy(grid)))
    return entries


@pytest.mark.parametrize(
    ("references", "grid", "want", "source"),
    [
        # the default report: 01 trains both references, 06 reads committed tables
        (REFERENCES, {**GRID, "source": "/repo/results/grid-v3"}, FROM_01, "01_train_and_evaluate"),
        (REFERENCES, None, FROM_01, "01_train_and_evaluate"),
        # 01's references are the main run's exact setting: they win over the small grid's means
        (REFERENCES, GRID, FROM_01, "01_train_and_evaluate"),
        # a 01 that recorded no references (an older record): the small grid still fills the cards
        (None, GRID, FROM_GRID, "06_method_comparison"),
        # one reference missing in 01 (a report method that is itself EW, say): the other is shown
        ({"test_ndcg@20_ew": 0.0992}, None, {"single-task": None, "ew": 0.0992}, "01_train_and_evaluate"),
    ],
)
def test_headline_takes_single_task_and_ew_from_notebook_01(references, grid, want, source):
    entries = _with_references(references, grid)
    head = headline(entries)
    assert head["main"]["notebook"] == "01_train_and_evaluate"
    got = {c["method"]: c["value"] for c in head["compared"]}
    assert got == want
    assert all(c["notebook"] == (source if c["value"] is not None else None) for c in head["compared"])
    page = render_index({"entries": entries, "ok": True})
    text = _text(page)
    head_text = text[text.index("Headline") : text.index("Ranking metrics")]
    for method, value in want.items():
        if value is not None:
            assert fmt_value(value, True) in head_text, method
    assert ("not trained by this report" in head_text) == any(v is None for v in want.values())


def test_headline_cards_from_notebook_01_show_the_differences_and_say_where_they_come_from():
    page = render_index({"entries": _with_references(REFERENCES, None), "ok": True})
    text = _text(page)
    head = text[text.index("Headline") : text.index("Ranking metrics")]
    # ml-100k's numbers from the issue: PMTRec 27.53, single-task 28.83, EW 9.92
    assert head.index("27.53") < head.index("single-task") < head.index("28.83") < head.index("9.92")
    assert "-1.30" in head and "+17.61" in head  # main run minus each reference, x100
    assert "01 · Train and evaluate" in head and "small grid" not in head
    assert "same setting" in head  # the note says what the reference runs are
