"""Browser tier smoke tests: prove the JupyterLab + headless Chromium + Playwright plumbing.

1. JupyterLab opens a tiny notebook, runs all cells, shows the printed output, renders an
   ipywidgets Checkbox whose click (a real browser click) updates a Label through the kernel.
   Screenshot: test-output/browser/smoke.png.
2. A report page written by :func:`pmtrec_lab.reports.run_report` renders its plotly figure from
   the shared ``plotly.min.js`` with every network request blocked (file:// only), i.e. offline.
   Screenshot: test-output/browser/report_page.png.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.browser_support import (
    click_widget_checkbox,
    jupyterlab,
    launch_browser,
    new_page,
    open_notebook,
    run_all_cells,
    save_screenshot,
    screenshot_on_failure,
    started_playwright,
    wait_for_output_text,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

KERNEL_METADATA = {
    "kernelspec": {"name": "pmtrec-lab", "display_name": "pmtrec-lab (.venv)", "language": "python"},
    "language_info": {"name": "python"},
}


@pytest.fixture(scope="module")
def playwright():
    """A started Playwright (sync API) for the module; skip/fail when the package is missing."""
    with started_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright):
    """Headless system Chromium, closed after the module."""
    browser = launch_browser(playwright)
    yield browser
    browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page per test (no shared storage); closed by a finalizer."""
    with new_page(browser) as page:
        yield page


def _write_notebook(path: Path, sources: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(KERNEL_METADATA)
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lab-root")
    _write_notebook(
        root / "smoke.ipynb",
        [
            'greeting = "hello from " + "pmtrec-lab smoke"\nprint(greeting)',
            "import ipywidgets as w\n"
            'box = w.Checkbox(value=False, description="Enable smoke")\n'
            'label = w.Label("smoke checked=False")\n'
            "box.observe(lambda ch: setattr(label, 'value', f\"smoke checked={ch['new']}\"), names='value')\n"
            "w.VBox([box, label])",
        ],
    )
    return root


@pytest.fixture(scope="module")
def lab_server(lab_root):
    """JupyterLab on a free port serving ``lab_root``; always stopped (context manager)."""
    with jupyterlab(lab_root) as (proc, url):
        yield proc, url


def test_jupyterlab_runs_notebook_and_widget(lab_server, page):
    proc, url = lab_server
    with screenshot_on_failure(page, "smoke"):
        open_notebook(page, url, "smoke.ipynb")
        assert run_all_cells(page, timeout=120), "a cell raised; see test-output/browser/smoke-failure.png"
        printed = wait_for_output_text(page, "hello from pmtrec-lab smoke")
        wait_for_output_text(page, "smoke checked=False")

        assert click_widget_checkbox(page, "Enable smoke") is True
        changed = wait_for_output_text(page, "smoke checked=True", timeout=30)
    shot = save_screenshot(page, "smoke.png")

    assert printed.is_visible() and changed.is_visible()
    assert shot.stat().st_size > 10_000
    assert proc.poll() is None, "JupyterLab died during the test"


@pytest.mark.notebook
def test_report_page_renders_plotly_offline(tmp_path, page):
    from pmtrec_lab.reports import run_report

    src = tmp_path / "src"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(KERNEL_METADATA)
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Offline figure"),
        nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import plotly.graph_objects as go\n"
            "go.Figure(go.Bar(x=list(range(n)), y=[i * i for i in range(n)])).show()"
        ),
    ]
    nbformat.write(nb, src / "fig.ipynb")
    result = run_report([src / "fig.ipynb"], {"fig": {"n": 5}}, tmp_path / "out", timeout_per_cell=120)
    assert result.ok, result.entries[0].error

    requested: list[str] = []

    def only_local(route):
        requested.append(route.request.url)
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route("**/*", only_local)
    with screenshot_on_failure(page, "report_page"):
        page.goto((tmp_path / "out" / "fig.html").as_uri())
        page.locator(".js-plotly-plot .main-svg").first.wait_for(state="visible", timeout=30_000)
    bars = page.locator(".js-plotly-plot .bars .point").count()
    save_screenshot(page, "report_page.png")

    assert bars == 5
    assert any(u.endswith("/plotly.min.js") for u in requested)
    assert not errors, errors
