"""Execute parameterized notebooks with papermill and publish them as an offline HTML report.

:func:`run_report` runs each notebook in its own kernel and writes into ``out_dir``::

    <name>.ipynb          the executed notebook (papermill's output; outputs kept as produced)
    <name>.html           the page (nbconvert "lab" template)
    <name>.values.json    headline values the notebook recorded with pmtrec_lab.reports.record
    plotly.min.js         ONE shared copy of plotly.js for every page (only if a page has figures)
    index.html            the page a person reads: headline (test NDCG@20 of the main run, beside
                          it single-task and EW where the report trains them), an overview
                          row per notebook, then each notebook's values, rounded, in small tables
                          (pmtrec_lab.reports.index_html)
    index.json            the same data with exact values (and the headline), for scripts and tests

Kernel environment. Each kernel starts with the runner's environment (jupyter_client copies
``os.environ`` when no ``env`` is given) plus ``PLOTLY_RENDERER=notebook`` (plotly >= 6.1 would
otherwise emit only its own MIME type, which nbconvert drops) and ``PMTREC_RECORD_PATH`` (where
``record()`` writes). These and the working directory are handed to the kernel through a small
kernel-manager subclass, not by mutating ``os.environ`` or chdir-ing the runner process.

Code in pages. Reports are read for their figures and numbers, so code input is hidden by default;
a code cell is shown when it is tagged ``show-input``, when it is papermill's
``injected-parameters`` cell (it says what the page was run with), or when it raised (so the
traceback has its context). ``show_code=True`` shows every cell except those tagged
``hide-input`` or collapsed in JupyterLab (``metadata.jupyter.source_hidden``). Cells tagged
``remove-cell`` are dropped, outputs of cells tagged ``remove-output`` are dropped.

Training logs. Training prints one line per epoch and, in a kernel, shows a progress bar per
epoch; a page would show all of it (15 lines a run, three runs in notebook 01) above its figures.
Each code cell's printed lines (stdout) are folded into ONE closed ``<details>`` element, placed
where the first of them was, whose summary says how many lines it holds; the whole log stays on
the page, out of its main flow. stderr (warnings) stays in view. Progress bars (widget views of
an ipywidgets progress bar, or of a widget whose state was not saved) are dropped: a static page
cannot drive them and the log says the same; when no widget view is left, the saved widget state
is dropped too, so the page does not load the widget manager from a CDN.

plotly.js. The "notebook" renderer displays, on its first use in a kernel, a raw HTML output with
``window.PlotlyConfig`` and a ``<script>`` holding the whole 4.8 MB library; each figure is then a
``<div>`` plus a small ``Plotly.newPlot`` script. Before export every ``<script>`` whose body is
plotly.js is removed from the outputs, and a page that shows plotly figures gets
``<script src="plotly.min.js"></script>`` in its ``<head>``: a synchronous script in the head runs
before any figure script in the body, so figures render even when the cell that embedded the
library was hidden or removed. Each figure output also carries a synchronous ``<script src>`` for
MathJax from a CDN; those are removed too (the page template loads MathJax once for the whole
page), so an offline page is not held up by one failed CDN request per figure. The .ipynb keeps
its embedded copy, so it still renders on its own.

Failures. A notebook that raises (papermill's PapermillExecutionError), times out or loses its
kernel is marked failed with ``ename: evalue``; its partially executed notebook is still exported
and the remaining notebooks still run. ``ReportResult.ok`` is False when any notebook failed.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from pmtrec_lab.paths import atomic_path
from pmtrec_lab.reports.index_html import headline, render_index
from pmtrec_lab.reports.params import check_output_folder, check_parameter_names
from pmtrec_lab.reports.record import RECORD_PATH_ENV, load_recorded, write_report_text

log = logging.getLogger(__name__)

PLOTLY_JS_NAME = "plotly.min.js"
SHOW_INPUT_TAG = "show-input"
HIDE_INPUT_TAG = "hide-input"
REMOVE_CELL_TAG = "remove-cell"
REMOVE_OUTPUT_TAG = "remove-output"
_ALWAYS_SHOWN_TAGS = frozenset({SHOW_INPUT_TAG, "injected-parameters"})

# The head of every plotly.js bundle starts with this banner ("/**\n* plotly.js v4.1.1\n...").
# No "^": Pattern.match(text, pos) anchors at pos, while "^" would only match at index 0.
_PLOTLY_BANNER = re.compile(r"\s*/\*\*?\s*\*?\s*plotly\.js v(\d[\w.\-]*)")
# Each figure of the "notebook" renderer also loads MathJax from a CDN, synchronously.
_FIGURE_MATHJAX = re.compile(r"<script\s+src=\"https?://[^\"]*mathjax[^\"]*\"\s*>\s*</script>", re.IGNORECASE)
_SCRIPT_OPEN = re.compile(r"<script\b[^>]*>", re.IGNORECASE)
_PLOTLY_USE = ("Plotly.newPlot", "window.PLOTLYENV")
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
#: The class of the ``<details>`` element holding a cell's printed lines.
LOG_CLASS = "pmtrec-log"
#: Widget models a progress bar is made of (tqdm's bar is an HBox around one of them).
_PROGRESS_MODELS = frozenset({"FloatProgressModel", "IntProgressModel"})
#: The trainer's epoch line, "[pmtrec] epoch 3/15 ...".
_EPOCH_LINE = re.compile(r"^\[[^\]\n]+\] epoch \d+/\d+ ", re.MULTILINE)


@dataclass
class ReportEntry:
    """What the report knows about one notebook; file names are relative to the report folder."""

    name: str
    title: str
    source: str
    status: str  # "ok" | "failed"
    duration_s: float
    parameters: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    html: str | None = None
    ipynb: str | None = None
    values_json: str | None = None
    error: str | None = None
    ename: str | None = None
    evalue: str | None = None
    failed_cell: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReportResult:
    """Entries in run order; ``ok`` is True only when every notebook ran without error."""

    entries: list[ReportEntry]
    ok: bool
    out_dir: Path | None = None
    index_html: Path | None = None
    index_json: Path | None = None

    def entry(self, name: str) -> ReportEntry:
        """The entry of the notebook named ``name`` (its file stem)."""
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# kernel environment


def _kernel_manager_class(extra_env: Mapping[str, str], cwd: Path) -> type:
    """A kernel manager that starts the kernel in ``cwd`` with ``os.environ`` + ``extra_env``.

    papermill has no ``env`` argument and its ``cwd`` argument chdirs the whole runner process;
    nbclient accepts a ``kernel_manager_class``, and ``start_kernel`` takes Popen's ``env``/``cwd``.
    """
    from jupyter_client import AsyncKernelManager

    env_update = {k: str(v) for k, v in extra_env.items()}

    class _ReportKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            env = dict(kw.pop("env", None) or os.environ)
            env.update(env_update)
            kw.setdefault("cwd", str(cwd))
            await super().start_kernel(env=env, **kw)

    return _ReportKernelManager


# ---------------------------------------------------------------------------------------------
# HTML export


def _strip_plotly_library(text: str) -> tuple[str, list[str]]:
    """Remove every ``<script>`` whose body is a plotly.js bundle; return text and found versions."""
    out: list[str] = []
    versions: list[str] = []
    pos = 0
    for match in _SCRIPT_OPEN.finditer(text):
        if match.start() < pos:
            continue  # inside a script we already skipped
        body_start = match.end()
        close = text.find("</script>", body_start)
        if close < 0:
            break
        banner = _PLOTLY_BANNER.match(text, body_start, min(close, body_start + 400))
        if banner is None:
            continue
        versions.append(banner.group(1))
        out.append(text[pos : match.start()])
        pos = close + len("</script>")
    if not versions:
        return text, versions
    out.append(text[pos:])
    return "".join(out), versions


def _widget_state(nb: Any) -> Mapping[str, Any]:
    """The widget models papermill saved with the notebook, by model id ({} when none)."""
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {})
    state = saved.get("state", {}) if isinstance(saved, Mapping) else {}
    return state if isinstance(state, Mapping) else {}


def _is_progress_bar(model_id: Any, state: Mapping[str, Any]) -> bool:
    """True for a view a static page cannot show usefully: a progress bar (or an HBox holding
    one, tqdm's), or a model whose state was not saved (a closed widget renders nothing)."""
    model = state.get(str(model_id))
    if not isinstance(model, Mapping):
        return True
    if model.get("model_name") in _PROGRESS_MODELS:
        return True
    children = (model.get("state") or {}).get("children") or []
    return any(
        (state.get(str(child).removeprefix("IPY_MODEL_")) or {}).get("model_name") in _PROGRESS_MODELS
        for child in children
    )


def _log_output(text: str) -> Any:
    """One ``display_data`` output: ``text`` in a closed ``<details>`` whose summary counts its lines."""
    import nbformat

    n = len(text.splitlines())
    kind = "Training log" if _EPOCH_LINE.search(text) else "Printed output"
    summary = f"{kind} ({n} line{'s' if n != 1 else ''}, click to show)"
    body = (
        f'<details class="{LOG_CLASS}"><summary>{html.escape(summary)}</summary>'
        f'<pre style="max-height: 30em; overflow: auto">{html.escape(text)}</pre></details>'
    )
    return nbformat.v4.new_output("display_data", data={"text/html": body})


def _fold_training_log(outputs: list[Any], state: Mapping[str, Any]) -> list[Any]:
    """``outputs`` with their stdout lines folded into one ``<details>`` (where the first was) and
    progress-bar widget views left out (module docstring, "Training logs")."""
    kept: list[Any] = []
    printed: list[str] = []
    at: int | None = None
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            text = output.get("text", "")
            printed.append("".join(text) if isinstance(text, list) else str(text))
            at = len(kept) if at is None else at
            continue
        view = (output.get("data") or {}).get(WIDGET_VIEW_MIME)
        if isinstance(view, Mapping) and _is_progress_bar(view.get("model_id"), state):
            continue
        kept.append(output)
    if at is not None:
        kept.insert(at, _log_output("".join(printed)))
    return kept


def _has_widget_views(cells: list[Any]) -> bool:
    return any(
        WIDGET_VIEW_MIME in (output.get("data") or {})
        for cell in cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def _prepare_for_html(nb: Any, show_code: bool) -> tuple[Any, list[str]]:
    """Apply the cell tags and visibility rules (module docstring), fold each cell's training log
    into a closed ``<details>``, drop progress bars, and strip plotly.js copies."""
    versions: list[str] = []
    cells = []
    state = _widget_state(nb)
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if REMOVE_CELL_TAG in tags:
            continue
        if cell.cell_type == "code":
            if REMOVE_OUTPUT_TAG in tags:
                cell.outputs = []
            cell.outputs = _fold_training_log(list(cell.get("outputs", [])), state)
            raised = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            collapsed = bool(cell.metadata.get("jupyter", {}).get("source_hidden"))  # collapsed in Lab
            hidden = HIDE_INPUT_TAG in tags or collapsed
            visible = (show_code and not hidden) or bool(tags & _ALWAYS_SHOWN_TAGS) or raised
            if not visible:
                cell.metadata.setdefault("transient", {})["remove_source"] = True
            for output in cell.get("outputs", []):
                data = output.get("data")
                if not data or "text/html" not in data:
                    continue
                text = data["text/html"]
                if isinstance(text, list):
                    text = "".join(text)
                text, found = _strip_plotly_library(text)
                versions.extend(found)
                if any(marker in text for marker in _PLOTLY_USE):
                    text = _FIGURE_MATHJAX.sub("", text)
                data["text/html"] = text
        cells.append(cell)
    nb.cells = cells
    if not _has_widget_views(cells):
        nb.metadata.pop("widgets", None)  # no view left to render: no widget manager from a CDN
    return nb, versions


def _head_scripts() -> str:
    # PlotlyConfig must be set before plotly.js loads (the renderer's own init does the same).
    return (
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f'<script src="{PLOTLY_JS_NAME}"></script>\n'
    )


def _installed_plotly_js() -> Path:
    return Path(str(resources.files("plotly") / "package_data" / PLOTLY_JS_NAME))


def _plotly_js_version(path: Path) -> str | None:
    with path.open(encoding="utf-8") as fh:
        match = _PLOTLY_BANNER.match(fh.read(400))
    return match.group(1) if match else None


def _write_plotly_js(out_dir: Path) -> Path:
    """Copy the installed plotly.min.js into ``out_dir`` unless an identical copy is there."""
    src = _installed_plotly_js()
    dst = out_dir / PLOTLY_JS_NAME
    if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
        return dst
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
    return dst


def export_html(ipynb: Path, html_path: Path, show_code: bool = False) -> bool:
    """Export an executed notebook to ``html_path`` (atomically); return True if it shows plotly figures.

    The page references ``plotly.min.js`` beside it; the caller puts the file there
    (:func:`run_report` does).
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    nb, versions = _prepare_for_html(nb, show_code)
    exporter = HTMLExporter(template_name="lab")
    if not show_code:
        exporter.exclude_input_prompt = True
        exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": ipynb.stem}})
    uses_plotly = bool(versions) or any(marker in body for marker in _PLOTLY_USE)
    if uses_plotly:
        installed = _plotly_js_version(_installed_plotly_js())
        stale = sorted({v for v in versions if v != installed})
        if stale:
            log.warning(
                "%s embeds plotly.js %s; the page will load the installed %s instead",
                ipynb.name,
                ", ".join(stale),
                installed,
            )
        head_end = body.lower().find("</head>")
        if head_end < 0:
            body = _head_scripts() + body
        else:
            body = body[:head_end] + _head_scripts() + body[head_end:]
    write_report_text(html_path, body)
    return uses_plotly


# ---------------------------------------------------------------------------------------------
# running


def _notebook_title(path: Path) -> str:
    """The first markdown ``# heading`` of the notebook, else its metadata title, else its stem."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # an unreadable notebook is reported by the run itself
        return path.stem
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return str(nb.metadata.get("title") or path.stem)


def _clear_outputs(out_dir: Path, name: str) -> None:
    """Remove this notebook's files from an earlier run, so a crash never shows stale results."""
    for suffix in (".ipynb", ".html", ".values.json"):
        (out_dir / f"{name}{suffix}").unlink(missing_ok=True)


def _run_one(
    nb_path: Path,
    out_dir: Path,
    parameters: dict[str, Any],
    kernel_name: str,
    timeout_per_cell: float | None,
    start_timeout: float,
    cwd: Path | None,
    show_code: bool,
    extra_env: Mapping[str, str],
    log_output: bool,
) -> tuple[ReportEntry, bool]:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = nb_path.stem
    out_nb = out_dir / f"{name}.ipynb"
    out_html = out_dir / f"{name}.html"
    values_json = out_dir / f"{name}.values.json"
    _clear_outputs(out_dir, name)
    entry = ReportEntry(
        name=name,
        title=_notebook_title(nb_path),
        source=str(nb_path),
        status="ok",
        duration_s=0.0,
        parameters=parameters,
    )
    env = {"PLOTLY_RENDERER": "notebook", **extra_env, RECORD_PATH_ENV: str(values_json)}
    km_class = _kernel_manager_class(env, (cwd or nb_path.parent).resolve())
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(nb_path),
            str(out_nb),
            parameters=parameters,
            kernel_name=kernel_name,
            progress_bar=False,
            log_output=log_output,
            start_timeout=int(start_timeout),
            execution_timeout=timeout_per_cell,
            kernel_manager_class=km_class,
        )
    except PapermillExecutionError as exc:
        entry.status, entry.ename, entry.evalue = "failed", exc.ename, exc.evalue
        entry.failed_cell = exc.exec_count
    except Exception as exc:  # timeouts, dead kernels, bad notebooks: report, go on
        entry.status, entry.ename, entry.evalue = "failed", type(exc).__name__, str(exc)
    entry.duration_s = round(time.perf_counter() - start, 3)
    if entry.status == "failed":
        entry.error = f"{entry.ename}: {entry.evalue}"

    uses_plotly = False
    if out_nb.exists():
        entry.ipynb = out_nb.name
        try:
            uses_plotly = export_html(out_nb, out_html, show_code=show_code)
            entry.html = out_html.name
        except Exception as exc:  # a page that cannot be exported is a failed entry
            msg = f"HTML export failed: {type(exc).__name__}: {exc}"
            entry.error = f"{entry.error}; {msg}" if entry.error else msg
            entry.status = "failed"
    if values_json.exists():
        entry.values_json = values_json.name
        try:
            entry.values = load_recorded(values_json)
        except (OSError, ValueError) as exc:
            msg = f"recorded values unreadable: {exc}"
            entry.error = f"{entry.error}; {msg}" if entry.error else msg
            entry.status = "failed"
    return entry, uses_plotly


def report_files(names: Sequence[str]) -> list[str]:
    """The file names a report of the notebooks ``names`` (file stems) writes in its folder."""
    per_notebook = [f"{n}{suffix}" for n in names for suffix in (".ipynb", ".html", ".values.json")]
    return [*per_notebook, "index.json", "index.html", PLOTLY_JS_NAME]


def run_report(
    notebooks: Sequence[str | os.PathLike],
    params: Mapping[str, Mapping[str, Any]] | None,
    out_dir: str | os.PathLike,
    kernel_name: str = "pmtrec-lab",
    common_params: Mapping[str, Any] | None = None,
    timeout_per_cell: float | None = 1800.0,
    *,
    start_timeout: float = 120.0,
    cwd: str | os.PathLike | None = None,
    show_code: bool = False,
    env: Mapping[str, str] | None = None,
    log_output: bool = False,
    title: str = "pmtrec-lab report",
) -> ReportResult:
    """Execute ``notebooks`` in order, export each to HTML and write ``index.html``/``index.json``.

    ``params`` maps a notebook's file stem to its parameters, merged over ``common_params``;
    a key naming no notebook is an error (raised before anything runs). Each kernel runs in
    ``cwd`` (default: the notebook's own folder, as in JupyterLab) with the runner's environment
    plus ``PLOTLY_RENDERER=notebook``, then ``env`` (which may override the renderer), then
    ``PMTREC_RECORD_PATH`` (always the runner's). ``show_code`` shows all code cells in the pages.
    ``timeout_per_cell`` bounds each cell (None: no bound). A failing notebook is reported and
    the rest still run; see the module docstring for what is written and how.
    """
    paths = [Path(p).resolve() for p in notebooks]
    names = [p.stem for p in paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"notebook names must be unique within a report: {dupes}")
    unknown = sorted(set(params or {}) - set(names))
    if unknown:
        raise ValueError(f"parameters given for notebooks not in the report: {unknown}; notebooks: {names}")
    for name in names:
        merged_names = [*(common_params or {}), *((params or {}).get(name) or {})]
        check_parameter_names(merged_names, name)
    out = Path(out_dir).resolve()
    check_output_folder(out, report_files(names), "report folder")
    out.mkdir(parents=True, exist_ok=True)

    entries: list[ReportEntry] = []
    any_plotly = False
    for i, path in enumerate(paths, 1):
        merged = {**(common_params or {}), **((params or {}).get(path.stem) or {})}
        log.info("report: running %s (%d/%d)", path.name, i, len(paths))
        entry, uses_plotly = _run_one(
            path,
            out,
            merged,
            kernel_name,
            timeout_per_cell,
            start_timeout,
            Path(cwd) if cwd is not None else None,
            show_code,
            env or {},
            log_output,
        )
        any_plotly |= uses_plotly
        if entry.ok:
            log.info("report: %s ok in %.1f s", entry.name, entry.duration_s)
        else:
            log.warning("report: %s FAILED in %.1f s: %s", entry.name, entry.duration_s, entry.error)
        entries.append(entry)
    if any_plotly:
        _write_plotly_js(out)

    ok = all(e.ok for e in entries)
    index_json, index_html = write_index(entries, out, ok=ok, title=title)
    return ReportResult(entries=entries, ok=ok, out_dir=out, index_html=index_html, index_json=index_json)


# ---------------------------------------------------------------------------------------------
# index


def write_index(
    entries: Sequence[ReportEntry], out_dir: Path, ok: bool, title: str = "pmtrec-lab report"
) -> tuple[Path, Path]:
    """Write ``index.json`` and ``index.html`` (both atomically) summarizing ``entries``.

    ``index.json`` holds every entry as recorded (exact values) plus ``headline``: the raw
    numbers the page's headline shows (:func:`pmtrec_lab.reports.index_html.headline`, None when
    no notebook recorded a main run). ``index.html`` is rendered from the same data
    (:func:`pmtrec_lab.reports.index_html.render_index`), rounded for reading.
    """
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    records = [e.to_dict() for e in entries]
    data = {
        "title": title,
        "generated_at": generated,
        "ok": ok,
        "entries": records,
        "headline": headline(records),
    }
    index_json = out_dir / "index.json"
    write_report_text(index_json, json.dumps(data, indent=2, default=str) + "\n")
    index_html = out_dir / "index.html"
    write_report_text(index_html, render_index(data))
    return index_json, index_html
