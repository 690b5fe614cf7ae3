"""One failing run never stops a grid (issue "Results you can trust", item 2), on every executor:
a learning rate whose loss diverges at step 1 (lr 1e30) is recorded failed with its reason in
``progress.csv``, the other runs finish (seed 0 at the good rate, then seed 1 there, since the
failed rate is no candidate), the tables are written, the command exits 2 naming the run; a
rerun leaves the failed run alone and still says so; ``--retry-failed`` trains it again.

The Ray instance runs the command in a child process: a local Ray instance started inside the
test process would outlive the command there and meet the cluster tests that come later."""

from __future__ import annotations

import json
import subprocess
import sys

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


def _compare(args: list[str], capfd) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``pmtrec-lab compare ARGS`` (Ray's in a child process)."""
    if "ray" in args:
        done = subprocess.run([sys.executable, "-m", "pmtrec_lab.cli", *args], capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr
    rc = main(args)
    captured = capfd.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_diverging_run_is_recorded_and_the_rest_of_the_grid_finishes(tmp_path, capfd, executor):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "out"
    args = ["compare", "--grid", str(grid), "--out", str(out), *executor]
    rc, _, err = _compare(args, capfd)
    assert rc == 2
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
    rc, stdout, err = _compare(args, capfd)
    assert rc == 2
    assert "failed before" in stdout and "synthetic/pcgrad/lr1e+30-seed0" in err
    assert _status(out, "ew", "lr1e+30-seed0")["updated"] == before

    # --retry-failed trains them again (and they fail again, the same way)
    rc, stdout, _ = _compare([*args, "--retry-failed"], capfd)
    assert rc == 2 and "failed before" not in stdout
    assert _status(out, "ew", "lr1e+30-seed0")["state"] == "failed"


@pytest.mark.parametrize("layout", ["missing", "empty", "unfinished-run-only"])
def test_tables_only_without_finished_runs_says_so_and_creates_nothing(tmp_path, capfd, layout):
    """``compare --tables-only`` on a folder with no finished run exits 2 saying so, and writes
    nothing (it used to exit 0 silently and create the folder)."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "out"
    if layout != "missing":
        out.mkdir()
    if layout == "unfinished-run-only":
        run = out / "runs" / "synthetic" / "ew" / "lr0.01-seed0-00000000"
        run.mkdir(parents=True)
        (run / "status.json").write_text('{"state": "running"}')
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc = main(["compare", "--grid", str(grid), "--out", str(out), "--tables-only"])
    err = capfd.readouterr().err
    assert rc == 2 and "no finished run" in err and str(out) in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
