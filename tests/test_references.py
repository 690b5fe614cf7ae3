"""The report's reference runs (``reports/references.py``): the same setting with EW and with the
main task alone, cached like any run, and the table and headlines notebook 01 shows."""

from __future__ import annotations

import math

import pytest

from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.reports.references import (
    REFERENCE_METHODS,
    reference_config,
    reference_headlines,
    reference_runs,
    reference_summary,
    reference_table,
)
from pmtrec_lab.train.cache import cached_run

SYN = {"num_users": 300, "num_items": 150, "interactions_per_user": 12}
BASE = {"dataset": "synthetic", "loader_args": SYN, "k_core": 2, "dim": 8, "epochs": 2, "lr": 0.01}


def test_reference_config_replaces_only_the_method():
    cfg = notebook_config(**BASE, method="pmtrec", method_params={"tau": 0.5}, seed=3,
                          overrides={"data": {"meta_split": True}})
    for method in REFERENCE_METHODS:
        ref = reference_config(cfg, method)
        assert ref.method.name == method and ref.method.params == {}
        assert ref.model_dump(exclude={"method"}) == cfg.model_dump(exclude={"method"})
    assert cfg.method.name == "pmtrec" and cfg.method.params == {"tau": 0.5}  # not modified


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    cfg = notebook_config(**BASE, method="pmtrec")
    run = cached_run(cfg, root)
    return root, cfg, {"pmtrec": run, **reference_runs(cfg, root)}


def test_reference_runs_train_once_and_are_reused(runs):
    root, cfg, by = runs
    assert list(by) == ["pmtrec", "ew", "single-task"]
    assert all(r.finished for r in by.values())
    assert len({r.path for r in by.values()}) == 3
    again = reference_runs(cfg, root)
    assert {m: r.path for m, r in again.items()} == {m: by[m].path for m in REFERENCE_METHODS}
    assert again["ew"].metrics == by["ew"].metrics  # reused, not retrained


def test_reference_table_and_headlines_are_the_runs_numbers(runs):
    _, _, by = runs
    table = reference_table(by)
    assert table["method"].tolist() == ["pmtrec", "ew", "single-task"]
    test = {m: r.metrics["test"]["ndcg@20"] for m, r in by.items()}
    assert table["test_ndcg@20"].tolist() == pytest.approx(list(test.values()))
    valid = [r.metrics["valid"]["ndcg@20"] for r in by.values()]
    assert table["valid_ndcg@20"].tolist() == pytest.approx(valid)
    single, ew = test["single-task"], test["ew"]
    assert table["vs_single_task"].tolist() == pytest.approx([v / single - 1 for v in test.values()])
    assert table["vs_ew"].tolist() == pytest.approx([v / ew - 1 for v in test.values()])
    heads = reference_headlines(table)
    assert heads["aux_tasks_helped"] is (ew > single)
    assert heads["vs_single_task"] == pytest.approx(test["pmtrec"] / single - 1)
    assert heads["test_ndcg@20_ew"] == pytest.approx(ew)
    summary = reference_summary(table, "synthetic")
    assert summary.columns.tolist() == ["dataset", "method", "ndcg20_mean"]
    assert summary["ndcg20_mean"].tolist() == pytest.approx(list(test.values()))


def test_a_missing_reference_gives_nan_not_an_error(runs):
    _, _, by = runs
    table = reference_table({"pmtrec": by["pmtrec"], "ew": by["ew"]})
    assert table["vs_single_task"].isna().all()
    heads = reference_headlines(table)
    assert heads["aux_tasks_helped"] is None and heads["vs_single_task"] is None
    assert not math.isnan(heads["vs_ew"])
