"""Every committed grid still finds its finished runs under the names the code gives them now.

A run's folder name hashes its method's resolved parameters (``compare/layout.py``). Adding a
parameter to a method, or changing a default, renames every run of that method, and a resumed
grid would retrain them all: for the v3 grid, which spans sessions, hours of work. This test
fails first, naming the runs that would be lost, so that such a change comes with a plan (pin the
old value in the grid file, or give the change a new label) instead of a silent retrain.

It cannot see grids whose folders predate hashed names (``results/grid``, ``results/tuning``):
those folders are reused as they are, and their run configs record parameters as given, not
resolved. A default change must pin their labels by hand (both files do, since v3).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pmtrec_lab.compare.layout import renamed_runs, run_path
from pmtrec_lab.compare.spec import load_grid, unit_lrs

RESULTS = Path(__file__).resolve().parents[1] / "results"
GRIDS = sorted(p for p in RESULTS.glob("*.yaml") if (RESULTS / p.stem / "runs").is_dir())
#: pilots whose runs were renamed before ``name_neutral`` existed, by the v3 parameters added
#: after them (``spsa_*``, ``moment_*``, ``delta_*`` ...). They are records of a design step, never
#: resumed; their committed tables stay as written, and their run folders as they were.
RENAMED_BEFORE_THE_GUARD = {"study-v3-pilot", "study-v3-meta-pilot"}


def test_there_are_committed_grids():
    assert {"grid", "study-v3", "study-v3-combined"} <= {p.stem for p in GRIDS}


@pytest.mark.parametrize("grid_file", GRIDS, ids=lambda p: p.stem)
def test_finished_runs_keep_their_names(grid_file):
    if grid_file.stem in RENAMED_BEFORE_THE_GUARD:
        pytest.skip("renamed before the guard existed (RENAMED_BEFORE_THE_GUARD says why)")
    spec = load_grid(grid_file)
    out = RESULTS / grid_file.stem
    lost, found = [], 0
    for dataset in spec.datasets:
        for method in spec.methods:
            for lr in unit_lrs(spec, dataset, method):
                for seed in spec.seeds:
                    others = renamed_runs(out, spec, dataset, method, lr, seed)
                    lost += [f"{dataset}/{method}/{name}" for name in others]
                    found += (run_path(out, spec, dataset, method, lr, seed) / "metrics.json").is_file()
    assert not lost, (
        f"{grid_file.name}: finished runs the code no longer names, which a resumed grid would retrain: "
        f"{lost[:6]} ... A parameter added to a method belongs in its Params.name_neutral with the "
        "value that behaves as before (mtl/params.py); a changed default must pin the old value in "
        "the grid file instead."
    )
    assert found > 0


def test_a_neutral_parameter_leaves_names_alone(monkeypatch):
    """A parameter at its ``name_neutral`` value is left out of the hash; at any other value it
    names the run."""
    from pmtrec_lab.compare.layout import run_key, run_name
    from pmtrec_lab.compare.spec import validate_grid
    from pmtrec_lab.mtl.pmtrec import PMTRecParams

    spec = validate_grid(
        {"datasets": ["synthetic"], "methods": ["pmtrec", "learned"],
         "variants": {"learned": {"name": "pmtrec", "params": {"delta": "learned"}}}}
    )  # fmt: skip
    before = {m: run_name(spec, m, 1e-3, 0) for m in spec.methods}
    assert "delta" in run_key(spec, "pmtrec", 1e-3, 0)["params"]
    monkeypatch.setattr(PMTRecParams, "name_neutral", {**PMTRecParams.name_neutral, "delta": "off"})
    assert "delta" not in run_key(spec, "pmtrec", 1e-3, 0)["params"]
    assert run_key(spec, "learned", 1e-3, 0)["params"]["delta"] == "learned"
    assert run_name(spec, "pmtrec", 1e-3, 0) != before["pmtrec"]
    assert run_name(spec, "learned", 1e-3, 0) == before["learned"]
