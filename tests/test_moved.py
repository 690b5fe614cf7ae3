"""``compare.moved``: the same runs in two grids that differ in a setting outside the methods'
parameters pair by name, and the table says which moved and by how much (real synthetic grids: the
same grid twice moves nothing, being deterministic; an auxiliary holdout moves EW's runs)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pmtrec_lab.compare import GridSpec, run_grid
from pmtrec_lab.compare.layout import run_path
from pmtrec_lab.compare.moved import main, markdown, moved

BASE = {
    "data": {"loader_args": {"num_users": 120, "num_items": 80}, "aux_holdout": 0},
    "encoder": {"name": "mf", "dim": 8},
    "optim": {"epochs": 2, "batch_size": 512},
    "progress": "none",
}


def _grid(tmp_path, name: str, holdout: float) -> tuple[GridSpec, object]:
    base = {**BASE, "data": {**BASE["data"], "aux_holdout": holdout}}
    spec = GridSpec(
        datasets=["synthetic"], methods=["single-task", "ew"], seeds=[0, 1], lrs=[0.01], base=base
    )
    run_grid(spec, tmp_path / name)
    return spec, tmp_path / name


def _test_ndcg(out, spec, method: str) -> list[float]:
    runs = [run_path(out, spec, "synthetic", method, 0.01, s) for s in spec.seeds]
    return [json.loads((run / "metrics.json").read_text())["test"]["ndcg@20"] for run in runs]


def test_moved_pairs_runs_and_measures_the_change(tmp_path, capsys):
    spec, before = _grid(tmp_path, "before", 0)
    _, again = _grid(tmp_path, "again", 0)
    _, after = _grid(tmp_path, "after", 0.3)
    same = moved(before, again)
    assert set(same.method) == {"single-task", "ew"}
    assert (same.paired_runs == 2).all() and (same.identical == 2).all()
    assert (same["diff"] == 0).all() and (same.max_abs_diff == 0).all()

    table = moved(before, after).set_index("method")
    ew = table.loc["ew"]
    b, a = _test_ndcg(before, spec, "ew"), _test_ndcg(after, spec, "ew")
    assert ew.paired_runs == 2 and ew.identical == sum(x == y for x, y in zip(b, a)) < 2
    assert ew.test_before == pytest.approx(sum(b) / 2) and ew.test_after == pytest.approx(sum(a) / 2)
    assert ew["diff"] == pytest.approx(ew.test_after - ew.test_before)
    assert ew.max_abs_diff == pytest.approx(max(abs(x - y) for x, y in zip(b, a))) and ew.max_abs_diff > 0
    assert ew.seed_std == pytest.approx(pd.Series(b).std())
    assert ew.lr_before == ew.lr_after == 0.01 and ew.seeds == 2

    assert "| synthetic | single-task | 2 | 2 | 2 | 0.01 / 0.01 | 2 |" in markdown(same)
    csv = tmp_path / "moved.csv"
    main([str(before), str(after), "--csv", str(csv)])
    assert "| synthetic | ew | 2 | " in capsys.readouterr().out
    assert pd.read_csv(csv).shape[0] == 2


def test_a_folder_that_is_not_a_grid_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty"), str(tmp_path / "empty")])
    assert "is not a grid folder (no grid.resolved.yaml)" in capsys.readouterr().err


def test_a_grid_still_running_is_compared_on_its_finished_seeds(tmp_path):
    spec, before = _grid(tmp_path, "before", 0)
    _, after = _grid(tmp_path, "after", 0.3)
    (run_path(after, spec, "synthetic", "ew", 0.01, 1) / "metrics.json").unlink()  # seed 1 not done
    ew = moved(before, after).set_index("method").loc["ew"]
    b = _test_ndcg(before, spec, "ew")
    a = json.loads((run_path(after, spec, "synthetic", "ew", 0.01, 0) / "metrics.json").read_text())["test"][
        "ndcg@20"
    ]
    assert ew.paired_runs == 1 and ew.seeds == 1
    assert ew.test_before == b[0] and ew.test_after == a  # seed 0 on both sides, not seeds 0 and 1
