"""A run's item-side evaluation: ``items.json`` holds the beyond-accuracy metrics of its test
ranking and its item popularity groups, the grid tables carry them, and runs trained before they
existed leave the tables as they were."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pmtrec_lab.compare import GridSpec, run_grid, summarize
from pmtrec_lab.compare.layout import collect
from pmtrec_lab.config import load_config
from pmtrec_lab.data import dataset_for_config
from pmtrec_lab.eval.beyond import BeyondAccuracy
from pmtrec_lab.train import build_model, train
from pmtrec_lab.train.run import load_checkpoint
from pmtrec_lab.train.trainer import evaluate_split

pytestmark = pytest.mark.slow

BASE = {
    "data": {"loader_args": {"num_users": 150, "num_items": 90}},
    "encoder": {"name": "mf", "dim": 16},
    "optim": {"epochs": 2, "batch_size": 512},
    "progress": "none",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = load_config(
        base={**BASE, "data": {"name": "synthetic", **BASE["data"]}, "optim": {"epochs": 2, "lr": 0.01}}
    )
    return train(cfg, tmp_path_factory.mktemp("run") / "r")


def test_items_json_is_the_best_checkpoints_test_ranking(run):
    items = json.loads((run.path / "items.json").read_text())
    cfg = run.config
    ds = dataset_for_config(cfg.data)
    model = build_model(cfg, ds)
    model.load_state_dict(load_checkpoint(run.path / "best.pt")["model"])
    popularity = np.bincount(ds.split.train[:, 1], minlength=ds.num_items)
    acc = BeyondAccuracy(popularity, cfg.eval.ks)
    evaluate_split(model, ds, cfg, "test", torch.device("cpu"), beyond=acc)
    assert items["test"] == pytest.approx(acc.result(), abs=1e-12)
    assert items["tail_ratio"] == 0.1
    per_item = pd.read_parquet(run.path / "per_item_test.parquet")
    groups = items["groups"]
    for grouping in ("popularity", "head20"):
        assert sum(level["items"] for level in groups[grouping].values()) == len(per_item)
    tail = groups["popularity"]["tail"]
    assert 0 <= tail["ndcg@20"] <= 1 and list(groups["popularity"]) == ["tail", "medium", "head"]


def test_grid_tables_carry_beyond_accuracy_only_where_runs_record_it(tmp_path):
    spec = GridSpec(datasets=["synthetic"], methods=["ew", "pcgrad"], seeds=[0], lrs=[0.01], base=BASE)
    run_grid(spec, tmp_path)
    runs = collect(tmp_path, spec)
    assert {"test_itemcoverage@20", "test_giniindex@20"} <= set(runs.columns)
    summary = summarize(tmp_path, spec)["summary"].set_index("method")
    for method in ("ew", "pcgrad"):
        row = runs[runs["method"] == method].iloc[0]
        assert summary.loc[method, "coverage20"] == pytest.approx(row["test_itemcoverage@20"])
        assert summary.loc[method, "tail20"] == pytest.approx(row["test_tailpercentage@20"])
    # runs from before items.json: no beyond-accuracy columns at all, the tables as they were
    for path in tmp_path.rglob("items.json"):
        path.unlink()
    older = collect(tmp_path, spec)
    assert not any(c.startswith("test_itemcoverage") for c in older.columns)
    tables = summarize(tmp_path, spec)
    assert "coverage20" not in tables["summary"].columns
