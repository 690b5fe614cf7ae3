"""A comparison grid that cannot count a run twice, mix two runs in one folder, or fail with a
traceback: one parametrized test per failure family, at the command line where a user meets it
(issue "Hardening", item 6 and the grid-file part of item 10).

Every grid here is checked before anything is written: no run trains (``train`` is replaced by a
recorder) and the output folder is never created. The folder-name tests read the run folders the
recorder was asked to train in, so they test the runner's choice of folder, not a helper.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pmtrec_lab.cli import main
from pmtrec_lab.mtl import resolve_params

RESULTS = Path(__file__).resolve().parents[1] / "results"

#: a grid small enough that nothing it names is slow to validate (no run ever trains here)
GRID: dict[str, Any] = {
    "datasets": ["synthetic"],
    "methods": ["ew"],
    "seeds": [0],
    "lrs": [0.01],
    "base": {"encoder": {"name": "mf", "dim": 8}, "optim": {"epochs": 1}, "progress": "none"},
}


@pytest.fixture
def trained(monkeypatch) -> list[Path]:
    """The run folders the grid asked to train, in order; nothing is trained or read."""
    calls: list[Path] = []

    def fake_train(cfg, run_dir, dataset=None, **kwargs):
        calls.append(Path(run_dir))

    monkeypatch.setattr("pmtrec_lab.train.train", fake_train)
    monkeypatch.setattr("pmtrec_lab.compare.grid.dataset_for_config", lambda data: None)
    return calls


def _grid_file(tmp_path: Path, grid: dict[str, Any] | str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(grid if isinstance(grid, str) else yaml.safe_dump(grid, sort_keys=False))
    return path


def _refused(capsys, grid: Path, out: Path, extra: list[str] = ()) -> str:
    """Run ``compare`` on ``grid``; assert it is refused in one line, before anything is written."""
    rc = main(["compare", "--grid", str(grid), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(grid) in err, err  # the message names the grid file
    assert not out.exists(), "the grid was validated only after its output folder was written"
    return err


# --- repeated or colliding seeds, learning rates, datasets, methods ----------------------------


@pytest.mark.parametrize(
    "change, text, extra, expected",
    [
        ({"seeds": [0, 0, 1]}, None, [], ["seeds", "0", "more than once"]),
        # 0.003 and 0.0030000001 differ, but both would be the folder and table label lr0.003
        ({"lrs": [3e-3, 0.0030000001]}, None, [], ["lrs", "lr0.003", "0.0030000001"]),
        # YAML 1.1 reads 1e-3 as a string; the grid reads it as 0.001, the other value
        (None, "lrs: [1e-3, 0.001]\n", [], ["lrs", "0.001", "more than once"]),
        ({}, None, ["--set", "seeds=[2, 1, 2]"], ["seeds", "2", "more than once", "--set seeds=[2, 1, 2]"]),
        ({"datasets": ["synthetic", "synthetic"]}, None, [], ["datasets", "synthetic", "more than once"]),
        ({"methods": ["ew", "pcgrad", "ew"]}, None, [], ["methods", "ew", "more than once"]),
        ({"seeds": [0, 0]}, None, ["--tables-only"], ["seeds", "more than once"]),
    ],
    ids=[
        "seeds-0-0-1",
        "lrs-same-folder",
        "lrs-1e-3-and-0.001",
        "set-seeds",
        "datasets",
        "methods",
        "tables-only",
    ],
)
def test_repeated_or_colliding_grid_values_are_refused(
    tmp_path, capsys, trained, change, text, extra, expected
):
    if text is not None:
        grid = {**GRID, **yaml.safe_load(text)}
        body = yaml.safe_dump({k: v for k, v in grid.items() if k != "lrs"}, sort_keys=False) + text
    else:
        body = {**GRID, **change}
    err = _refused(capsys, _grid_file(tmp_path, body), tmp_path / "out", extra)
    for fragment in expected:
        assert fragment in err, err
    assert trained == []


# --- unknown or empty entries --------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"methods": ["ew", "no-such-method"]}, ["methods", "'no-such-method'", "known", "pcgrad"]),
        ({"datasets": ["synthetic", "atlantis"]}, ["datasets", "'atlantis'", "known", "ciao"]),
        ({"methods": []}, ["methods", "empty"]),
        ({"lrs": []}, ["lrs", "empty"]),
        ({"seeds": []}, ["seeds", "empty"]),
        ({"datasets": []}, ["datasets", "empty"]),
        ({"seed": [0]}, ["unknown key 'seed'", "seeds"]),
        ({"lrs": [0.01, -0.001]}, ["lrs", "-0.001", "positive"]),
        ({"methods": ["v"], "variants": {"v": {"name": "nope"}}}, ["variants.v.name", "'nope'", "known"]),
        (
            {"methods": ["v"], "variants": {"v": {"name": "pmtrec", "params": {"rho": "high"}}}},
            ["variants.v.params.rho"],
        ),
        ({"methods": ["v"], "variants": {"v": {"name": "ew", "parms": {}}}}, ["variants.v", "'parms'"]),
        ({"pmtrec": "pmtrec-typo"}, ["pmtrec", "'pmtrec-typo'"]),
    ],
    ids=[
        "method",
        "dataset",
        "no-methods",
        "no-lrs",
        "no-seeds",
        "no-datasets",
        "unknown-key",
        "negative-lr",
        "variant-method",
        "variant-params",
        "variant-key",
        "pmtrec-label",
    ],
)
def test_unknown_or_empty_grid_entries_are_refused(tmp_path, capsys, trained, change, expected):
    err = _refused(capsys, _grid_file(tmp_path, {**GRID, **change}), tmp_path / "out")
    for fragment in expected:
        assert fragment in err, err
    assert trained == []


@pytest.mark.parametrize(
    "base, dataset, expected",
    [
        ({"tasks": {"include": ["social:trust"]}}, "ciao", None),  # a ciao task, valid on ciao
        (
            {"tasks": {"include": ["social:trust"]}},
            "synthetic",
            ["base (on dataset 'synthetic')", "social:trust"],
        ),
        ({"encoder": {"dimm": 8}}, "synthetic", ["base", "unknown key 'encoder.dimm'"]),
        ({"optim": {"epochs": 0}}, "synthetic", ["base", "optim.epochs"]),
    ],
    ids=["dataset-task-accepted", "dataset-task-refused", "unknown-base-key", "bad-base-value"],
)
def test_base_is_checked_on_each_dataset(tmp_path, capsys, trained, base, dataset, expected):
    """``base`` is validated as each dataset's run configuration, at load: a dataset's own task is
    accepted on it (not checked against the default dataset), an error names base and dataset."""
    grid = _grid_file(tmp_path, {**GRID, "datasets": [dataset], "base": {**GRID["base"], **base}})
    out = tmp_path / "out"
    if expected is None:
        assert main(["compare", "--grid", str(grid), "--out", str(out)]) == 0, capsys.readouterr().err
        assert len(trained) == 1
        return
    err = _refused(capsys, grid, out)
    for fragment in expected:
        assert fragment in err, err
    assert trained == []


# --- grid files that cannot be read as a grid ----------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        ("datasets: [synthetic]\nseeds: 0: 1\n", ["line 2", "not valid YAML"]),
        ("datasets: [synthetic]\nseeds: [0, 1\nlrs: [0.01]\n", ["line 3", "not valid YAML"]),
        ("- synthetic\n- ew\n", ["expected a mapping", "list"]),
        ("just a sentence\n", ["expected a mapping", "str"]),
        (None, ["not found"]),
        ("<directory>", ["directory"]),
    ],
    ids=["yaml-syntax", "yaml-unclosed", "top-level-list", "top-level-scalar", "missing", "directory"],
)
def test_unreadable_grid_files_give_one_line(tmp_path, capsys, trained, content, expected):
    grid = tmp_path / "grid.yaml"
    if content == "<directory>":
        grid.mkdir()
    elif content is not None:
        grid.write_text(content)
    err = _refused(capsys, grid, tmp_path / "out")
    assert "grid file" in err, err
    for fragment in expected:
        assert fragment in err, err
    assert trained == []


# --- run folder names ----------------------------------------------------------------------------

_PMTREC_DEFAULTS = resolve_params("pmtrec")


def _variant(name: str, params: dict[str, Any] | None = None, lr: float = 0.01) -> dict[str, Any]:
    """A grid running one variant label ``v`` (``name`` with ``params``) at learning rate ``lr``."""
    return {**GRID, "lrs": [lr], "methods": ["v"], "variants": {"v": {"name": name, "params": params or {}}}}


@pytest.mark.parametrize(
    "a, b, same",
    [
        # distinct resolved parameters under one label: distinct folders
        (_variant("pmtrec", {"rho": 0.5}), _variant("pmtrec", {"rho": 0.25}), False),
        (_variant("ew"), _variant("pmtrec"), False),
        (_variant("pmtrec-gmb"), _variant("pmtrec-gmb", {"align": False}), False),
        (_variant("ew", lr=0.003), _variant("ew", lr=0.0030000001), False),  # one readable prefix
        # the same resolved parameters, spelled differently: one folder (a resumed run, not a new one)
        (_variant("pmtrec"), _variant("pmtrec", dict(_PMTREC_DEFAULTS)), True),
        (_variant("pmtrec", {"rho": 0}), _variant("pmtrec", {"rho": 0.0, "tau": 1.0}), True),
        (_variant("pmtrec-gmb"), _variant("pmtrec-gmb", {"rho": 0.5}), True),
    ],
    ids=["rho", "method", "preset-override", "lr", "defaults-spelled-out", "int-vs-float", "preset-default"],
)
def test_run_folders_follow_the_resolved_parameters(tmp_path, capsys, trained, a, b, same):
    out = tmp_path / "out"
    for i, grid in enumerate((a, b)):
        path = _grid_file(tmp_path, grid, f"grid{i}.yaml")
        assert main(["compare", "--grid", str(path), "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(trained) == 2, trained
    first, second = trained
    assert first.parent == second.parent == out / "runs" / "synthetic" / "v"
    assert (first == second) is same, (first.name, second.name)
    for run_dir, grid in zip(trained, (a, b)):
        assert re.fullmatch(rf"lr{grid['lrs'][0]:g}-seed0-[0-9a-f]{{8}}", run_dir.name), run_dir.name


@pytest.mark.parametrize(
    "grid_name, dataset, method",
    [
        ("grid", "ciao", "pmtrec"),
        ("grid", "amazon", "ew-gmb"),
        ("grid", "lastfm", "single-task"),
        ("tuning", "lastfm", "base"),  # a variant label with its parameters spelled out
        ("tuning", "ciao", "rho0.5-max"),
    ],
)
def test_committed_old_name_folders_are_still_found(tmp_path, capsys, trained, grid_name, dataset, method):
    """The committed runs live in ``lr<lr>-seed<seed>`` folders: the runner finds them finished
    (trains nothing) and the tables read them, so the summary row is the committed one."""
    committed = RESULTS / grid_name
    out = tmp_path / grid_name
    shutil.copytree(committed / "runs" / dataset / method, out / "runs" / dataset / method)
    sets = ["--set", f"datasets=[{dataset}]", "--set", f"methods=[{method}]"]
    grid = RESULTS / f"{grid_name}.yaml"
    assert main(["compare", "--grid", str(grid), "--out", str(out), *sets]) == 0, capsys.readouterr().err
    assert trained == []
    # the committed row, on the committed table's columns (later columns, such as the share of
    # runs at the epoch cap, are added by today's code to tables that were written before them)
    theirs = pd.read_csv(committed / "summary.csv")
    ours = pd.read_csv(out / "summary.csv")[list(theirs.columns)]
    theirs = theirs[(theirs["dataset"] == dataset) & (theirs["method"] == method)]
    assert len(ours) == 1 and len(theirs) == 1
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), theirs.reset_index(drop=True))


def test_a_new_name_folder_wins_over_an_old_name_one(tmp_path):
    """The read rule of ``layout``: the new name when its folder exists or neither does, the old
    ``lr<lr>-seed<seed>`` name only when just that folder exists."""
    from pmtrec_lab.compare import GridSpec, run_path

    spec = GridSpec(**GRID)
    new = run_path(tmp_path, spec, "synthetic", "ew", 0.01, 0)
    assert re.fullmatch(r"lr0\.01-seed0-[0-9a-f]{8}", new.name)
    old = new.parent / "lr0.01-seed0"
    old.mkdir(parents=True)
    assert run_path(tmp_path, spec, "synthetic", "ew", 0.01, 0) == old
    new.mkdir()
    assert run_path(tmp_path, spec, "synthetic", "ew", 0.01, 0) == new


@pytest.mark.parametrize("state, noticed", [("finished", True), ("failed", False), ("running", False)])
def test_a_finished_run_under_another_name_is_named_not_silently_retrained(
    tmp_path, capsys, trained, state, noticed
):
    """A finished run whose name no longer matches (its method's parameters resolved differently
    when it ran) is not reused; the grid says so, naming it, and trains the run anew."""
    out = tmp_path / "out"
    path = _grid_file(tmp_path, _variant("pmtrec", {"rho": 0.5}))
    stale = out / "runs" / "synthetic" / "v" / "lr0.01-seed0-0badc0de"
    stale.mkdir(parents=True)
    (stale / "status.json").write_text(json.dumps({"tool": "pmtrec-lab", "schema": 2, "state": state}))
    assert main(["compare", "--grid", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert len(trained) == 1 and trained[0].name != stale.name
    assert ("lr0.01-seed0-0badc0de" in err and "not reused" in err) is noticed, err
