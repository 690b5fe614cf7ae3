"""The report machinery on small real notebooks: papermill execution in the pmtrec-lab kernel,
recorded values, failure handling, HTML pages sharing one plotly.min.js, index.html/json.

One report (three notebooks, a failing one in the middle) is run once per module; the tests read
what it wrote. The record() unit tests at the end need no kernel.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from pmtrec_lab.reports import RECORD_PATH_ENV, ReportResult, load_recorded, record, run_report
from pmtrec_lab.reports.runner import PLOTLY_JS_NAME, _installed_plotly_js, _strip_plotly_library

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]

KERNEL_METADATA = {
    "kernelspec": {"name": "pmtrec-lab", "display_name": "pmtrec-lab (.venv)", "language": "python"},
    "language_info": {"name": "python"},
}
HIDDEN_MARKER = "hidden_marker_4711"
SHOWN_MARKER = "shown_marker_0815"


def _notebook(path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(KERNEL_METADATA)
    nb.cells = cells
    nbformat.write(nb, path)
    return path


def _params_cell(source: str):
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> ReportResult:
    src = tmp_path_factory.mktemp("notebooks")
    out = tmp_path_factory.mktemp("report")
    # A stale values file from an "earlier run": the failing notebook must not report it.
    (out / "boom.values.json").write_text(json.dumps({"stale": 1}))

    _notebook(
        src / "figure.ipynb",
        [
            nbformat.v4.new_markdown_cell("# Figure notebook\n\nA plotly figure and recorded values."),
            _params_cell("scale = 1.0\nn_points = 5"),
            nbformat.v4.new_code_cell(
                f"# {HIDDEN_MARKER}\n"
                "import os\n"
                "import numpy as np\n"
                "import plotly.graph_objects as go\n"
                "ys = np.arange(n_points) * scale\n"
                "fig = go.Figure(go.Scatter(x=list(range(n_points)), y=ys.tolist(), mode='lines+markers'))\n"
                "fig.show()"
            ),
            nbformat.v4.new_code_cell(f"# {SHOWN_MARKER}\nfig.show()", metadata={"tags": ["show-input"]}),
            nbformat.v4.new_code_cell(
                "from pmtrec_lab.reports import record\n"
                "_ = record({'total': ys.sum(), 'n_points': n_points, 'scale': scale,\n"
                "            'renderer': os.environ.get('PLOTLY_RENDERER'), 'cwd': os.getcwd()})"
            ),
        ],
    )
    _notebook(
        src / "boom.ipynb",
        [
            _params_cell("level = 0"),
            nbformat.v4.new_code_cell("print('before the failure')"),
            nbformat.v4.new_code_cell("raise ValueError(f'boom at level {level}')"),
            nbformat.v4.new_code_cell("print('never reached')"),
        ],
    )
    _notebook(
        src / "plain.ipynb",
        [
            _params_cell("level = 0"),
            nbformat.v4.new_code_cell("from pmtrec_lab.reports import record\n_ = record({'level': level})"),
        ],
    )
    return run_report(
        [src / "figure.ipynb", src / "boom.ipynb", src / "plain.ipynb"],
        {"figure": {"scale": 2.5, "n_points": 4}, "boom": {"level": 7}},
        out,
        common_params={"level": 3},
        timeout_per_cell=120,
    )


def test_recorded_values_depend_on_parameters(report):
    fig = report.entry("figure")
    assert fig.ok, fig.error
    assert fig.parameters == {"level": 3, "scale": 2.5, "n_points": 4}
    recorded = load_recorded(report.out_dir / "figure.values.json")
    assert recorded["total"] == pytest.approx(2.5 * (0 + 1 + 2 + 3))
    assert recorded["n_points"] == 4
    assert fig.values == recorded
    # The runner's environment and working directory reached the kernel.
    assert recorded["renderer"] == "notebook"
    assert Path(recorded["cwd"]) == Path(fig.source).parent
    assert report.entry("plain").values == {"level": 3}


def test_failing_notebook_is_reported_and_the_rest_still_run(report):
    assert report.ok is False
    boom = report.entry("boom")
    assert boom.status == "failed"
    assert boom.ename == "ValueError" and boom.evalue == "boom at level 7"
    assert "boom at level 7" in boom.error
    assert boom.values == {} and not (report.out_dir / "boom.values.json").exists()  # stale file gone
    assert report.entry("plain").ok and report.entry("figure").ok  # before and after the failure

    # The partially executed notebook is still exported, with its traceback and its input shown.
    page = (report.out_dir / "boom.html").read_text(encoding="utf-8")
    assert "before the failure" in page and "boom at level 7" in page
    assert "never reached" not in page


def test_index_json_and_html_summarize_every_notebook(report):
    index = json.loads((report.out_dir / "index.json").read_text(encoding="utf-8"))
    assert index["ok"] is False
    by_name = {e["name"]: e for e in index["entries"]}
    assert [e["name"] for e in index["entries"]] == ["figure", "boom", "plain"]
    assert by_name["boom"]["status"] == "failed" and "ValueError: boom at level 7" in by_name["boom"]["error"]
    assert by_name["figure"]["status"] == "ok" and by_name["figure"]["values"]["n_points"] == 4
    assert by_name["figure"]["title"] == "Figure notebook"
    assert all(e["duration_s"] > 0 for e in index["entries"])

    page = (report.out_dir / "index.html").read_text(encoding="utf-8")
    assert "ValueError: boom at level 7" in page and "1 of 3 notebooks failed" in page
    for name in ("figure", "boom", "plain"):
        assert f'href="{name}.html"' in page and f'href="{name}.ipynb"' in page
    assert 'href="figure.values.json"' in page and "scale" in page
    # no notebook here recorded a test NDCG@20: the headline says so, index.json has it as None
    assert index["headline"]["main"] is None and "No notebook of this report recorded" in page


def test_plotly_page_references_one_shared_plotly_js(report):
    html_path = report.out_dir / "figure.html"
    page = html_path.read_text(encoding="utf-8")
    assert 'class="plotly-graph-div"' in page and "Plotly.newPlot" in page
    assert page.count(f'<script src="{PLOTLY_JS_NAME}"></script>') == 1
    assert page.index(f'<script src="{PLOTLY_JS_NAME}">') < page.index("</head>")
    assert "plotly.js v" not in page  # no inline copy of the library
    assert html_path.stat().st_size < 1_000_000

    shared = report.out_dir / PLOTLY_JS_NAME
    assert shared.read_bytes() == _installed_plotly_js().read_bytes()
    # The executed notebook keeps its own copy, so it renders on its own in JupyterLab.
    assert "plotly.js v" in (report.out_dir / "figure.ipynb").read_text(encoding="utf-8")


def test_code_is_hidden_unless_tagged(report):
    page = (report.out_dir / "figure.html").read_text(encoding="utf-8")
    assert HIDDEN_MARKER not in page
    assert SHOWN_MARKER in page
    assert "injected-parameters" in (report.out_dir / "figure.ipynb").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", page)  # drop the syntax-highlighting spans
    assert "n_points = 4" in text  # papermill's injected-parameters cell is shown


def test_unknown_parameter_target_is_rejected_before_running(tmp_path):
    nb = _notebook(tmp_path / "one.ipynb", [_params_cell("x = 1")])
    with pytest.raises(ValueError, match="typo"):
        run_report([nb], {"typo": {"x": 2}}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_timeouts_and_missing_notebooks_are_failures_not_crashes(tmp_path):
    cells = [nbformat.v4.new_code_cell(src) for src in ("print('started')", "import time; time.sleep(60)")]
    slow = _notebook(tmp_path / "slow.ipynb", cells)
    result = run_report([slow, tmp_path / "missing.ipynb"], None, tmp_path / "out", timeout_per_cell=3)
    assert not result.ok
    timed_out, missing = result.entries
    assert timed_out.status == "failed" and timed_out.ename == "CellTimeoutError"
    assert timed_out.duration_s < 30 and timed_out.html == "slow.html"
    assert "started" in (tmp_path / "out" / "slow.html").read_text(encoding="utf-8")
    assert missing.status == "failed" and missing.ename == "FileNotFoundError" and missing.html is None


def test_strip_plotly_library_keeps_other_scripts():
    lib = "/**\n* plotly.js v9.9.9\n* Copyright\n*/\n(function(){var big=1;})();"
    html = f"<script>window.PlotlyConfig = {{}};</script>\n<script>{lib}</script>"
    html += "<div>fig</div><script>x()</script>"
    stripped, versions = _strip_plotly_library(html)
    assert versions == ["9.9.9"]
    assert stripped == "<script>window.PlotlyConfig = {};</script>\n<div>fig</div><script>x()</script>"


# ---------------------------------------------------------------- record() without a kernel


def test_record_converts_numpy_and_honours_the_environment(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "nb.values.json"
    monkeypatch.setenv(RECORD_PATH_ENV, str(target))
    values = {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True), "arr": np.arange(3)}
    path = record({**values, "nan": float("nan")})
    assert path == target
    assert load_recorded(target) == {"f": 0.5, "i": 3, "b": True, "arr": [0, 1, 2], "nan": "nan"}
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_record_falls_back_to_cwd_and_explicit_dir_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(RECORD_PATH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert record({"a": 1}, name="demo") == tmp_path / "demo.values.json"
    monkeypatch.setenv(RECORD_PATH_ENV, os.fspath(tmp_path / "env.json"))
    assert record({"a": 2}, name="demo", out_dir=tmp_path / "x") == tmp_path / "x" / "demo.values.json"


def test_record_rejects_non_json_values(tmp_path):
    with pytest.raises(TypeError, match="values.bad"):
        record({"bad": object()}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="at most"):
        record({"big": np.zeros(5000)}, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_effective_pmtrec_params_is_the_registry_resolution():
    from pmtrec_lab.mtl import resolve_params
    from pmtrec_lab.reports.headlines import effective_pmtrec_params

    assert effective_pmtrec_params("pmtrec-gmb", {})["rho"] == 0.5  # the preset's override
    assert effective_pmtrec_params("pmtrec", {"rho": 0.25}) == resolve_params("pmtrec", {"rho": 0.25})
    assert effective_pmtrec_params("ew", {}) == {}  # no parameters: notebook 04's .get("rho") is None
