"""A report page keeps the training log out of its main flow (issue 26, item 4).

The trainer prints one line per epoch and, in a kernel, shows a progress bar (an ipywidgets
HBox) per epoch; a report page used to show all of it, 15 lines a run and three runs in notebook
01, above the figures. :func:`pmtrec_lab.reports.runner.export_html` now folds each cell's
printed lines into one closed ``<details>`` element where the first of them was, and leaves the
progress bars out (a static page cannot drive them, and the log says the same).

Built here from executed-notebook nodes of the shape papermill writes (no kernel, no training).
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from pmtrec_lab.reports.runner import export_html

KERNEL_METADATA = {
    "kernelspec": {"name": "pmtrec-lab", "display_name": "pmtrec-lab (.venv)", "language": "python"},
    "language_info": {"name": "python"},
}
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
FIGURE_HTML = (
    '<div class="plotly-graph-div" id="fig-{n}"></div><script>Plotly.newPlot("fig-{n}", [])</script>'
)


def _log_line(method: str, epoch: int, epochs: int) -> str:
    return f"[{method}] epoch {epoch}/{epochs} rec=0.6944 social:friends=0.6935 valid ndcg@20=0.0820 (0.2s)\n"


def _bar(model_id: str) -> nbformat.NotebookNode:
    """The output tqdm.auto displays in a kernel: a widget view and its text fallback."""
    return nbformat.v4.new_output(
        "display_data",
        data={
            WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
            "text/plain": "epoch 1/3:   0%|          | 0/4 [00:00<?, ?it/s]",
        },
    )


def _bar_state(model_id: str) -> dict:
    """The saved state of one tqdm bar: an HBox of (HTML, FloatProgress, HTML), hidden on close."""
    kids = [f"{model_id}-{k}" for k in ("pre", "bar", "post")]
    state = {model_id: {"model_name": "HBoxModel", "state": {"children": [f"IPY_MODEL_{k}" for k in kids]}}}
    for kid, name in zip(kids, ("HTMLModel", "FloatProgressModel", "HTMLModel")):
        state[kid] = {"model_name": name, "state": {}}
    return state


def _training_cell(
    methods: list[str], epochs: int, n: int
) -> tuple[nbformat.NotebookNode, dict, list[str]]:
    """A code cell that trained ``methods`` (bars and log lines interleaved, as papermill stores
    them), the bars' widget state and the printed lines."""
    outputs, state, lines = [], {}, []
    for method in methods:
        for epoch in range(1, epochs + 1):
            model_id = f"bar-{n}-{method}-{epoch}"
            outputs.append(_bar(model_id))
            state.update(_bar_state(model_id))
            line = _log_line(method, epoch, epochs)
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=line))
            lines.append(line.strip())
    return nbformat.v4.new_code_cell("run = cached_run(cfg)", outputs=outputs), state, lines


def _figure_cell(n: int) -> nbformat.NotebookNode:
    out = nbformat.v4.new_output("display_data", data={"text/html": FIGURE_HTML.format(n=n)})
    return nbformat.v4.new_code_cell("viz.learning_curves(run.history)", outputs=[out])


def _write(path: Path, cells: list, widget_state: dict) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(KERNEL_METADATA)
    if widget_state:
        saved = {"state": widget_state, "version_major": 2, "version_minor": 0}
        nb.metadata["widgets"] = {WIDGET_STATE: saved}
    nb.cells = cells
    nbformat.write(nb, path)
    return path


class _Details(HTMLParser):
    """The text inside each <details> (and its <summary>), and the text outside any."""

    def __init__(self) -> None:
        super().__init__()
        self.details: list[dict[str, str]] = []
        self.outside: list[str] = []
        self._depth = 0
        self._summary = False

    def handle_starttag(self, tag, attrs):
        if tag == "details":
            self._depth += 1
            self.details.append({"summary": "", "body": "", "open": str(dict(attrs).get("open", None))})
        elif tag == "summary":
            self._summary = True

    def handle_endtag(self, tag):
        if tag == "details":
            self._depth -= 1
        elif tag == "summary":
            self._summary = False

    def handle_data(self, data):
        if self._depth:
            self.details[-1]["summary" if self._summary else "body"] += data
        else:
            self.outside.append(data)


#: (cells: list of ("train", methods) / ("figure",) / ("print", text) / ("raise",)), by page shape
PAGES = {
    # notebook 02-04's shape: one run's log, then figures
    "one run": [("train", ["pmtrec"]), ("figure",), ("figure",)],
    # notebook 01's: the main run, figures, then the reference runs (two logs in one cell)
    "main run and two references": [
        ("train", ["pmtrec"]),
        ("figure",),
        ("train", ["ew", "single-task"]),
        ("figure",),
    ],
    # a page whose training cell raised after its log: the traceback stays in view
    "failed after training": [("train", ["pmtrec"]), ("raise",)],
}


def _build(tmp_path: Path, shape: list[tuple]) -> tuple[Path, list[list[str]]]:
    cells, state, logs = [nbformat.v4.new_markdown_cell("# A page\n\n## Learning curves")], {}, []
    for n, item in enumerate(shape):
        if item[0] == "train":
            cell, cell_state, lines = _training_cell(item[1], 3, n)
            cells.append(cell)
            state.update(cell_state)
            logs.append(lines)
        elif item[0] == "figure":
            cells.append(_figure_cell(n))
        else:
            err = nbformat.v4.new_output(
                "error",
                ename="ValueError",
                evalue="boom after training",
                traceback=["ValueError: boom after training"],
            )
            cells[-1].outputs.append(err)
    return _write(tmp_path / "page.ipynb", cells, state), logs


@pytest.mark.parametrize("shape", list(PAGES))
def test_page_folds_each_cells_training_log_into_a_closed_details_element(tmp_path, shape):
    nb_path, logs = _build(tmp_path, PAGES[shape])
    page_path = tmp_path / "page.html"
    export_html(nb_path, page_path)
    page = page_path.read_text(encoding="utf-8")
    parsed = _Details()
    parsed.feed(page)
    assert len(parsed.details) == len(logs), f"{shape}: one <details> per training cell"
    outside = "".join(parsed.outside)
    for details, lines in zip(parsed.details, logs):
        assert details["open"] == "None", "the log starts closed"
        assert f"{len(lines)} lines" in details["summary"]
        for line in lines:
            assert line in html.unescape(details["body"])  # the whole log is still on the page
            assert line not in outside  # but not in its main flow
    # the progress bars are gone: their views, and the widget state and loader they needed
    assert WIDGET_VIEW not in page and WIDGET_STATE not in page and "epoch 1/3:   0%" not in page
    assert "@jupyter-widgets/html-manager" not in page
    # figures and errors are untouched, in order after the log that precedes them
    figures = [m.start() for m in re.finditer(r'class="plotly-graph-div"', page)]
    assert len(figures) == sum(item[0] == "figure" for item in PAGES[shape])
    assert all(page.index("<details") < f for f in figures)
    if shape == "failed after training":
        assert "boom after training" in outside


def test_printed_output_other_than_a_log_and_warnings_stay_as_they_were(tmp_path):
    """stderr (warnings) stays in view; a cell with no printed lines gets no <details>."""
    warn = nbformat.v4.new_output("stream", name="stderr", text="UserWarning: few users in group\n")
    cells = [nbformat.v4.new_code_cell("x = 1", outputs=[warn]), _figure_cell(0)]
    nb_path = _write(tmp_path / "page.ipynb", cells, {})
    export_html(nb_path, tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "<details" not in page and "UserWarning: few users in group" in page
