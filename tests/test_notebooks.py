"""Notebook tier: every report notebook executed with papermill (through the report runner, as
``pmtrec-lab report`` does) on tiny parameters, asserting on the values each one records.

Synthetic data (it has social links) for the main pass; a second pass runs 02 on ml-100k (no
social links: the panels must say so and the notebook go on) and 06 on an empty results folder.
The stored notebooks are checked too: no outputs, kernelspec/language_info, a ``parameters``
cell, and identical to what ``notebooks/build_notebooks.py`` writes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from pmtrec_lab.mtl import resolve_params
from pmtrec_lab.reports import run_report
from pmtrec_lab.reports.cli import build_report_params
from pmtrec_lab.reports.defaults import NOTEBOOKS, notebook_path
from pmtrec_lab.reports.params import check_report_params
from pmtrec_lab.train import load_run

pytestmark = [pytest.mark.notebook, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
SYN = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}


def test_stored_notebooks_are_clean_parameterized_and_built_by_the_script():
    for name in NOTEBOOKS:
        nb = nbformat.read(notebook_path(name), as_version=4)
        assert nb.metadata.kernelspec.name == "pmtrec-lab", name
        assert nb.metadata.language_info.name == "python", name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert sum("record(" in c.source for c in code) == 1, name
        # papermill must parse every line of the parameters cell: a line it cannot parse (a
        # quote inside a comment, say) silently drops that parameter from --set
        lines = [ln for ln in tagged[0].source.splitlines() if re.match(r"^[A-Za-z_]\w*\s*=", ln)]
        declared = {ln.split("=", 1)[0].strip() for ln in lines}
        assert set(papermill.inspect_notebook(str(notebook_path(name)))) == declared, name
    check = subprocess.run(
        [sys.executable, str(REPO / "notebooks" / "build_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """All six notebooks on tiny synthetic parameters, one shared run cache."""
    root = tmp_path_factory.mktemp("nb")
    runs = root / "runs"
    common = {
        "dataset": "synthetic",
        "loader_args": SYN,
        "k_core": 2,
        "dim": 16,
        "epochs": 4,
        "lr": 0.01,
        "batch_size": 256,
        "runs_dir": str(runs),
    }
    _, per = build_report_params(None, [], list(NOTEBOOKS))  # the report's own per-notebook defaults
    per.setdefault("03_gradient_conflicts", {})["compare_align_off"] = True
    per.setdefault("05_ablation_explorer", {})["controls"] = {"gmb": False}
    per["06_method_comparison"] = {"run_small_grid": True, "grid_methods": ["ew", "pcgrad", "pmtrec"]}
    paths = [notebook_path(n) for n in NOTEBOOKS]
    check_report_params(paths, common, per)  # what the CLI checks: declared names and types
    result = run_report(paths, per, root / "out", common_params=common)
    return result, runs


def _values(result, name: str) -> dict:
    entry = result.entry(name)
    assert entry.ok, f"{name} failed: {entry.error}"
    return entry.values


def test_report_runs_every_notebook_and_writes_the_index(report):
    result, _ = report
    assert result.ok, [(e.name, e.error) for e in result.entries if not e.ok]
    index = json.loads(result.index_json.read_text())
    assert [e["name"] for e in index["entries"]] == list(NOTEBOOKS)
    for e in result.entries:
        html = (result.out_dir / e.html).read_text()
        assert "Plotly.newPlot" in html, e.name  # figures made it into the page
        assert "plotly.min.js" in html
    assert (result.out_dir / "plotly.min.js").is_file()


def test_01_records_the_runs_test_metrics(report):
    result, runs = report
    v = _values(result, "01_train_and_evaluate")
    run = load_run(runs / v["run"])
    assert v["test_ndcg@20"] == pytest.approx(run.metrics["test"]["ndcg@20"])
    assert v["valid_ndcg@20"] == pytest.approx(run.metrics["valid"]["ndcg@20"])
    assert 1 <= v["best_epoch"] <= v["epochs_run"] <= 4  # epochs counted from 1
    assert v["method"] == "pmtrec" and v["dataset"] == "synthetic"
    assert {"activity/cold", "activity/active", "social/with_links"} <= set(v["groups_ndcg@20"])
    items = json.loads((runs / v["run"] / "items.json").read_text())["test"]
    assert set(v["beyond@20"]) == {
        "itemcoverage@20",
        "averagepopularity@20",
        "giniindex@20",
        "tailpercentage@20",
    }
    for name, value in v["beyond@20"].items():
        assert value == pytest.approx(items[name])


def test_01_to_04_share_one_run_and_04_compares_per_side_gmb(report):
    result, runs = report
    names = {_values(result, n)["run"] for n in NOTEBOOKS[:4]}
    assert len(names) == 1  # 04 shows the report's own run: the default pmtrec's GMB
    assert len([p for p in runs.iterdir() if p.name.startswith("synthetic-pmtrec-")]) >= 1
    assert _values(result, "04_magnitude_balance")["side_gmb_run"].startswith("synthetic-pmtrec-gmb-")


def test_02_records_task_weights_and_social_correlations(report):
    result, _ = report
    v = _values(result, "02_task_weights")
    assert v["weights_recorded"] and v["has_social_links"]
    for side in ("user", "item"):
        total = sum(w for k, w in v["mean_weight"].items() if k.startswith(f"{side}/"))
        assert total == pytest.approx(1.0, abs=1e-4)
    assert "user/social:friends" in v["mean_weight"]
    assert set(v["spearman_vs_social_degree"]) and all(
        -1 <= r <= 1 for r in v["spearman_vs_social_degree"].values()
    )
    assert isinstance(v["entity"], int) and v["entity_side"] == "user"


def test_03_records_conflicts_and_alignment_removes_them(report):
    result, _ = report
    v = _values(result, "03_gradient_conflicts")
    assert v["conflict_fraction"] and all(0 < f < 1 for f in v["conflict_fraction"].values())
    assert v["conflict_fraction_combined"] == {"user": 0.0, "item": 0.0}
    # without TF alignment some entities' combined gradients do oppose the main task
    assert max(v["align_off_conflict_fraction_combined"].values()) > 0


def test_04_records_magnitude_ratios_before_and_after_gmb(report):
    result, _ = report
    v = _values(result, "04_magnitude_balance")
    before = v["norm_ratio_before"]
    assert set(before) == set(v["norm_ratio_after"]) and "user/social:friends" in before
    assert set(v["dominating_without_gmb"]) == {k for k, r in before.items() if r > 2}
    # beside it, v2's per-side rule (pmtrec-gmb, rho 0.5) pulls each side's ratio towards 1
    before, after = v["side_gmb_norm_ratio_before"], v["side_gmb_norm_ratio_after"]
    assert v["side_gmb_rho"] == 0.5 and set(before) == set(after)
    for key in before:
        assert abs(after[key] - 1) <= abs(before[key] - 1) + 1e-9  # GMB pulls towards the main task
    assert any(abs(after[k] - 1) < abs(before[k] - 1) - 1e-6 for k in before)


def test_04_shows_the_default_pmtrecs_gmb(report):
    """Issue 26, item 2: the default pmtrec is v3, whose GMB is per entity and reduce-only
    (gmb_mode=entity_reduce, recorded as gmb_reduce): notebook 04 shows it, its panel filled."""
    result, _ = report
    v = _values(result, "04_magnitude_balance")
    assert v["method"] == "pmtrec" and v["gmb_mode"] == "entity_reduce" and v["rho"] == 1.0
    reduce = v["gmb_reduce"]
    assert {"social:friends", "item_label:category"} <= set(reduce)
    assert all(0 < f <= 1 for f in reduce.values()) and min(reduce.values()) < 1  # reduces, never raises
    page = (result.out_dir / result.entry("04_magnitude_balance").html).read_text()
    assert "did not record gmb_reduce" not in page and "entity_reduce" in page


@pytest.mark.parametrize(
    "name", ["01_train_and_evaluate", "03_gradient_conflicts", "04_magnitude_balance", "06_method_comparison"]
)
def test_pages_that_train_fold_their_training_log(report, name):
    """Issue 26, item 4, on the real pages: the epoch lines sit in a closed <details>, no
    progress-bar widget is left, and every figure comes after the first log."""
    result, _ = report
    page = (result.out_dir / result.entry(name).html).read_text()
    assert '<details class="pmtrec-log">' in page and "<details open" not in page
    outside = re.sub(r"<details.*?</details>", "", page, flags=re.DOTALL)
    assert re.search(r"\] epoch \d+/4 ", page) and not re.search(r"\] epoch \d+/4 ", outside)
    assert "application/vnd.jupyter.widget-view+json" not in page


def test_headline_sets_01s_reference_runs_beside_the_main_run(report):
    """Issue 26, item 1, on a real report: single-task and EW come from notebook 01's own runs."""
    result, _ = report
    head = json.loads(result.index_json.read_text())["headline"]
    refs = _values(result, "01_train_and_evaluate")["references"]
    got = {c["method"]: (c["value"], c["source"]) for c in head["compared"]}
    assert got == {
        "single-task": (refs["test_ndcg@20_single-task"], "reference run"),
        "ew": (refs["test_ndcg@20_ew"], "reference run"),
    }
    assert "not trained by this report" not in result.index_html.read_text()


def test_05_runs_the_explorer_configuration_in_batch(report):
    result, runs = report
    v = _values(result, "05_ablation_explorer")
    assert v["controls"]["gmb"] is False  # GMB is on in PMTRec's defaults (v3: rho 1): switched off
    assert v["method_params"] == {"rho": 0.0}
    run = load_run(runs / v["run"])
    assert run.config.method.params == resolve_params("pmtrec", {"rho": 0.0})  # recorded resolved
    assert v["test_ndcg@20"] == pytest.approx(run.metrics["test"]["ndcg@20"])
    assert v["run"] != _values(result, "01_train_and_evaluate")["run"]


def test_06_small_grid_with_strongest_baseline_and_wilcoxon(report):
    result, _ = report
    v = _values(result, "06_method_comparison")
    assert v["results_found"] and v["source"] == "small grid"
    assert v["methods"] == ["ew", "pcgrad", "pmtrec"]
    assert v["strongest_baseline"]["synthetic"] in {"ew", "pcgrad"}
    w = v["wilcoxon"]["synthetic"]
    assert w["n"] == 120 and 0 <= w["p_value"] <= 1
    # PMTRec's grid run is the notebooks' run (same configuration): its metric matches 01's
    assert v["test_ndcg@20"]["synthetic/pmtrec"] == pytest.approx(
        _values(result, "01_train_and_evaluate")["test_ndcg@20"]
    )


def test_without_social_links_and_without_results_the_notebooks_say_so_and_go_on(tmp_path):
    common = {"dataset": "ml-100k", "dim": 8, "epochs": 1, "runs_dir": str(tmp_path / "runs")}
    per = {"06_method_comparison": {"results_dir": str(tmp_path / "no-results")}}
    result = run_report(
        [notebook_path("02_task_weights"), notebook_path("06_method_comparison")],
        per,
        tmp_path / "out",
        common_params=common,
    )
    assert result.ok, [(e.name, e.error) for e in result.entries if not e.ok]
    v2 = _values(result, "02_task_weights")
    assert v2["has_social_links"] is False and v2["spearman_vs_social_degree"] == {}
    assert v2["weights_recorded"] and "user/user_label:age" in v2["mean_weight"]
    page = (result.out_dir / result.entry("02_task_weights").html).read_text()
    assert "has no social links" in page
    v6 = _values(result, "06_method_comparison")
    assert v6["results_found"] is False and v6["source"] == str(tmp_path / "no-results")
    # the committed grids are still shown below, each labelled by the PMTRec it ran
    assert any(label.startswith("PMTRec v2 grid") for label in v6["other_grids"])
    assert "No result tables" in (result.out_dir / result.entry("06_method_comparison").html).read_text()


def test_06_by_default_shows_the_v3_grid_whole_with_the_v2_grid_labelled(tmp_path):
    """Notebook 06's default source is the committed v3 grid: its strongest baselines follow the
    corrected pool (lastfm's is static-lambda's variant static0.1), the v2 grid is shown labelled,
    the tuned grids' tuning curves are drawn, and no table is cut to "N rows x M columns"."""
    result = run_report([notebook_path("06_method_comparison")], {}, tmp_path / "out")
    assert result.ok, [(e.name, e.error) for e in result.entries if not e.ok]
    v = _values(result, "06_method_comparison")
    assert v["results_found"] and v["source"].endswith("results/grid-v3")
    assert v["datasets"] == ["amazon", "ciao", "lastfm", "ml-100k"]
    assert v["strongest_baseline"]["lastfm"] == "static0.1"
    assert any(label.startswith("PMTRec v2 grid") for label in v["other_grids"])
    # the committed tuned grids' studies are drawn as tuning curves (the shown grid is untuned)
    assert "shown" not in v["tuning_curves"]
    assert any(label.startswith("PMTRec v3, tuning pilot") for label in v["tuning_curves"])
    page = (result.out_dir / result.entry("06_method_comparison").html).read_text()
    assert not re.search(r"\d+ rows . \d+ columns", page)


def test_07_shows_each_committed_map_and_records_its_overall_benefit(tmp_path):
    """Notebook 07 on a map folder built here from planted per-entity values (one dataset whose
    social task helps the cold users): the recorded benefit and reliability are the overall
    table's; an empty folder says so and goes on."""
    import numpy as np
    import pandas as pd

    from pmtrec_lab.benefit.report import BenefitTables

    rng = np.random.default_rng(0)
    users, degree = 600, rng.zipf(1.8, 600).clip(max=300)
    signal = np.where(degree <= 2, 0.05, -0.02)
    rows = []
    for seed in range(3):
        base = rng.uniform(0, 0.3, users)
        for role, value in (("full", base + signal + rng.normal(0, 0.02, users)), ("social:trust", base)):
            rows.append(
                pd.DataFrame(
                    {
                        "dataset": "toy",
                        "method": role,
                        "role": role,
                        "seed": seed,
                        "side": "user",
                        "entity": np.arange(users),
                        "value": value,
                        "pairs": 1,
                    }
                )
            )
    features = pd.DataFrame(
        {
            "side": "user",
            "entity": np.arange(users),
            "train_degree": degree,
            "link_degree": rng.integers(0, 9, users),
            "label_count": 0,
        }
    )
    tables = BenefitTables(pd.concat(rows, ignore_index=True), features, n_boot=100)
    (tmp_path / "maps" / "toy").mkdir(parents=True)
    tables.write(tmp_path / "maps" / "toy")
    (tmp_path / "empty").mkdir()
    for source, name in ((tmp_path / "maps", "toy"), (tmp_path / "empty", None)):
        per = {"07_benefit_map": {"results_dir": str(source)}}
        result = run_report([notebook_path("07_benefit_map")], per, tmp_path / f"out-{source.name}")
        assert result.ok, [(e.name, e.error) for e in result.entries if not e.ok]
        v = _values(result, "07_benefit_map")
        page = (result.out_dir / result.entry("07_benefit_map").html).read_text()
        if name is None:
            assert v["datasets"] == [] and "No benefit-map tables" in page
            continue
        assert v["datasets"] == ["toy"]
        overall = tables.overall.set_index(["task", "side"]).loc[("social:trust", "user")]
        assert v["toy"]["social:trust/user"]["benefit_x100"] == pytest.approx(
            overall["benefit"] * 100, abs=1e-4
        )
        assert v["toy"]["social:trust/user"]["reliability"] == pytest.approx(overall["reliability"], abs=1e-4)
        assert "Plotly.newPlot" in page and "toy: by train_degree" in page


def test_02_to_04_show_pmtrec_v4_levels_and_per_task_adam(tmp_path):
    """Notebook 02 shows a run's level rounds (a placeholder without level_select); 03 trains the run
    with task_adam beside it and records its combined conflicts; 04 trains the run with a v4 switch
    beside it (``compare_v4``; its first round comes after 5 epochs) and records its test NDCG@20."""
    common = {
        "dataset": "synthetic",
        "loader_args": SYN,
        "k_core": 2,
        "dim": 8,
        "epochs": 7,
        "lr": 0.01,
        "batch_size": 256,
        "runs_dir": str(tmp_path / "runs"),
    }
    per = {
        "04_magnitude_balance": {"compare_v4": "level_select", "compare_gmb_method": None},
        "03_gradient_conflicts": {"compare_task_adam": True},
    }
    paths = [notebook_path(n) for n in ("02_task_weights", "03_gradient_conflicts", "04_magnitude_balance")]
    result = run_report(paths, per, tmp_path / "out", common_params=common)
    assert result.ok, [(e.name, e.error) for e in result.entries if not e.ok]
    page02 = (result.out_dir / result.entry("02_task_weights").html).read_text()
    assert "This run chose no auxiliary levels" in page02
    v4 = _values(result, "04_magnitude_balance")
    assert 0 < v4["level_select_test_ndcg@20"] < 1
    page04 = (result.out_dir / result.entry("04_magnitude_balance").html).read_text()
    assert "after epoch 5" in page04 and "branch epochs: 12 after epoch 5" in page04  # 2 tasks x (4 + 2)
    combined = _values(result, "03_gradient_conflicts")["task_adam_conflict_fraction_combined"]
    assert set(combined) == {"user", "item"} and all(0 <= v <= 1 for v in combined.values())


def test_01_shows_and_records_the_auxiliary_tasks_metrics_with_aux_holdout(tmp_path):
    common = {
        "dataset": "synthetic",
        "loader_args": SYN,
        "k_core": 2,
        "dim": 8,
        "epochs": 2,
        "lr": 0.01,
        "batch_size": 256,
        "aux_holdout": 0.2,
        "runs_dir": str(tmp_path / "runs"),
    }
    result = run_report([notebook_path("01_train_and_evaluate")], {}, tmp_path / "out", common_params=common)
    assert result.ok, [(e.name, e.error) for e in result.entries if not e.ok]
    aux = _values(result, "01_train_and_evaluate")["aux_test"]
    assert set(aux) == {"social:friends", "item_label:category"}
    assert 0 <= aux["social:friends"]["auc"] <= 1 and "accuracy" in aux["item_label:category"]
    page = (result.out_dir / result.entry("01_train_and_evaluate").html).read_text()
    assert "Auxiliary tasks on their held-out cases" in page
