"""One failing run never stops a grid (issue "Results you can trust", item 2), on every executor:
a learning rate whose loss diverges at step 1 (lr 1e30) is recorded failed with its reason in
``progress.csv``, the other runs finish (seed 0 at the good rate, then seed 1 there, since the
failed rate is no candidate), the tables are written, the command exits 2 naming the run; a
rerun leaves the failed run alone and still says so; ``--retry-failed`` trains it again."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from pmtrec_lab.cli import main

GRID = {
    "datasets": ["synthetic"],
    "methods": ["ew", "pcgrad"],
    "seeds": [0, 1],
    "lrs": [0.01, 1.0e30],
    "base": {
        "data": {"loader_args": {"num_users": 80, "num_items": 50}},
        "encoder": {"name": "mf", "dim": 8},
        "optim": {"epochs": 2, "batch_size": 256},
        "progress": "none",
    },
}

EXECUTORS = [
    pytest.param(["--executor", "sequential"], id="sequential"),
    pytest.param(["--jobs", "2"], id="process"),
    pytest.param(["--executor", "ray"], id="ray", marks=[pytest.mark.ray, pytest.mark.slow]),
]


def _status(out, method, prefix):
    (folder,) = (out / "runs" / "synthetic" / method).glob(f"{prefix}-*")
    return json.loads((folder / "status.json").read_text())


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_diverging_run_is_recorded_and_the_rest_of_the_grid_finishes(tmp_path, capfd, executor):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "out"
    args = ["compare", "--grid", str(grid), "--out", str(out), *executor]
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "2 run(s) failed" in err and "synthetic/ew/lr1e+30-seed0" in err and "non-finite" in err

    for method in ("ew", "pcgrad"):
        assert _status(out, method, "lr1e+30-seed0")["state"] == "failed"
        for prefix in ("lr0.01-seed0", "lr0.01-seed1"):  # the good rate, chosen, and its next seed
            assert _status(out, method, prefix)["state"] == "finished"
    progress = pd.read_csv(out / "progress.csv").set_index("method")
    assert progress.loc["ew", "done"] == 2 and "non-finite" in progress.loc["ew", "failed"]
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["method"]) == ["ew", "pcgrad"] and set(summary["lr"]) == {0.01}

    # a rerun trains nothing, leaves the failed runs alone and still exits 2 naming them
    before = _status(out, "ew", "lr1e+30-seed0")["updated"]
    assert main(args) == 2
    captured = capfd.readouterr()
    assert "failed before" in captured.out and "synthetic/pcgrad/lr1e+30-seed0" in captured.err
    assert _status(out, "ew", "lr1e+30-seed0")["updated"] == before

    # --retry-failed trains them again (and they fail again, the same way)
    assert main([*args, "--retry-failed"]) == 2
    assert "failed before" not in capfd.readouterr().out
    assert _status(out, "ew", "lr1e+30-seed0")["state"] == "failed"
