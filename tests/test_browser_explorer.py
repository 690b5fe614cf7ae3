"""Browser tier: notebook 05's AblationExplorer in a real JupyterLab, driven by headless Chromium.

The stored notebook is parameterized with tiny synthetic parameters (papermill's parameterize,
no execution) into a throw-away folder served by JupyterLab; the test runs all cells (the
explorer trains its initial configuration and shows curves + the session table), clicks the
"GMB" checkbox on and the "Train" button, and checks that a second run appears in the table
with different metrics, and that plotly figures render in the widget's output area.
Screenshot: test-output/browser/explorer.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from pmtrec_lab.reports.defaults import notebook_path
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

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(420)]

SYN = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}
ROWS_JS = """() => {
    const tables = [...document.querySelectorAll('.jp-OutputArea .widget-html table')];
    return tables.length ? tables[tables.length - 1].querySelectorAll('tbody tr').length : 0;
}"""
CELLS_JS = """() => {
    const tables = [...document.querySelectorAll('.jp-OutputArea .widget-html table')];
    if (!tables.length) return [];
    return [...tables[tables.length - 1].querySelectorAll('tbody tr')].map(
        tr => [...tr.querySelectorAll('td')].map(td => td.textContent.trim()));
}"""


@pytest.fixture(scope="module")
def playwright():
    with started_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root = tmp_path_factory.mktemp("explorer-lab")
    nb = load_notebook_node(str(notebook_path("05_ablation_explorer")))  # adds the metadata papermill needs
    params = {
        "dataset": "synthetic",
        "loader_args": SYN,
        "k_core": 2,
        "dim": 16,
        "epochs": 3,
        "lr": 0.01,
        "batch_size": 256,
        "runs_dir": str(root / "runs"),
        "interactive": True,
    }
    nb = parameterize_notebook(nb, params)
    nbformat.write(nb, root / "explorer.ipynb")
    return root


def test_explorer_toggle_and_train_in_jupyterlab(playwright, lab_root):
    browser = launch_browser(playwright)
    try:
        with (
            new_page(browser, height=1000, timeout=60) as page,
            jupyterlab(lab_root) as (proc, url),
            screenshot_on_failure(page, "explorer"),
        ):
            open_notebook(page, url, "explorer.ipynb")
            assert run_all_cells(page, timeout=240), (
                "a cell raised; see test-output/browser/explorer-failure.png"
            )
            wait_for_output_text(page, "Runs in this session", timeout=120)
            page.wait_for_function(f"() => ({ROWS_JS})() === 1", timeout=60_000)
            first = page.evaluate(CELLS_JS)
            # the curves and metrics were displayed into the widget's output area
            page.locator(".jp-OutputArea .js-plotly-plot .main-svg").first.wait_for(
                state="visible", timeout=60_000
            )
            figures_before = page.locator(".jp-OutputArea .js-plotly-plot").count()

            assert click_widget_checkbox(page, "GMB") is False  # switched off (v3's default: on, rho 1)
            wait_for_output_text(page, re.compile(r"Next run: .*rho=0\.0"), timeout=30)
            page.get_by_role("button", name="Train").click()
            page.wait_for_function(f"() => ({ROWS_JS})() === 2", timeout=180_000)
            wait_for_output_text(page, "Done: test ndcg@20", timeout=60)
            second = page.evaluate(CELLS_JS)
            page.locator(".jp-OutputArea .js-plotly-plot .main-svg").first.wait_for(state="visible")
            # the figures are re-rendered one after another: wait until all of them are back (an
            # appended set would make the count exceed figures_before, which the assertion catches)
            page.wait_for_function(
                "n => document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length >= n",
                arg=figures_before,
                timeout=60_000,
            )
            figures_after = page.locator(".jp-OutputArea .js-plotly-plot").count()
            page.get_by_text("Runs in this session").scroll_into_view_if_needed()
            shot = save_screenshot(page, "explorer.png")
            assert proc.poll() is None, "JupyterLab died during the test"
    finally:
        browser.close()

    assert len(first) == 1 and len(second) == 2
    assert second[0] == first[0]  # the first run's row is kept
    assert "gmb" in first[0][0] and "gmb" not in second[1][0]  # setting column
    assert second[1][3] != second[0][3]  # test ndcg@20 differs between the two runs
    assert figures_before >= 2 and figures_after == figures_before  # re-displayed, not appended
    assert shot.stat().st_size > 20_000
