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
import yaml

from pmtrec_lab.compare.layout import finished_runs, renamed_runs, run_path
from pmtrec_lab.compare.spec import GridSpec, load_grid, run_config, unit_lrs
from pmtrec_lab.config import load_run_config
from pmtrec_lab.train.trainer import _identity_yaml

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


# ------------------------------------------------------------------ the settings they trained with

#: grid files of studies one level down: ``results/<study>/<name>.yaml`` runs into ``results/<study>/<name>``
NESTED = sorted(
    p
    for p in RESULTS.glob("*/*.yaml")
    if (p.parent / p.stem / "runs").is_dir() and p.name != "grid.resolved.yaml"
)
#: tuned grids: their grid file and the tuning study they were run with (``compare --tuned``)
TUNED = {
    "grid-v3-tuned": ("grid-v3.yaml", "tuned-v3"),
    "grid-v3-tuned-study": ("grid-v3.yaml", "tuned-study"),
}
#: grids whose run records predate resolved parameters (``config.yaml`` lists only the given ones,
#: so a record does not say which parameters it trained with): the module docstring says why
UNRESOLVED_RECORDS = {"grid", "tuning"}


def _grid_folders() -> list[tuple[str, GridSpec, Path]]:
    from pmtrec_lab.compare.tuned import with_tuned

    out = [(p.stem, load_grid(p), RESULTS / p.stem) for p in GRIDS if p.stem not in UNRESOLVED_RECORDS]
    out += [(f"{p.parent.name}/{p.stem}", load_grid(p), p.parent / p.stem) for p in NESTED]
    for name, (grid, study) in TUNED.items():  # with the datasets and methods it was run with (--set)
        ran = yaml.safe_load((RESULTS / name / "grid.resolved.yaml").read_text())
        sets = [f"datasets=[{','.join(ran['datasets'])}]", f"methods=[{','.join(ran['methods'])}]"]
        out.append((name, with_tuned(load_grid(RESULTS / grid, sets), RESULTS / study), RESULTS / name))
    return out


def test_every_grid_folder_is_checked():
    """A new committed grid whose file this module cannot find would go unguarded."""
    checked = {name for name, _, _ in _grid_folders()} | UNRESOLVED_RECORDS
    committed = {str(p.parent.relative_to(RESULTS)) for p in RESULTS.glob("**/grid.resolved.yaml")}
    assert committed <= checked, f"grid folders without their grid file here: {sorted(committed - checked)}"


def _recorded_and_now(spec, out):
    """``(run, its recorded configuration, the one its grid gives now)`` per finished run."""
    for dataset, method, lr, seed, run in finished_runs(out, spec):
        recorded = load_run_config(run / "config.yaml")
        yield run, recorded, run_config(spec, dataset, method, lr, seed, recorded.data.data_dir)


@pytest.mark.parametrize("name,spec,out", _grid_folders(), ids=lambda v: v if isinstance(v, str) else "")
def test_finished_runs_keep_their_settings(name, spec, out):
    """A resumed grid returns its finished runs as they are and trains only the rest, so the rest
    must get the settings the finished ones trained with. A default that changes (as
    ``data.aux_holdout`` and ``optim.task_gradients`` did once the verdict grids were committed)
    would otherwise mix two configurations in one table without a word: every grid file pins the
    old value, and this test fails on a run whose recorded configuration the grid no longer gives."""
    runs = list(_recorded_and_now(spec, out))
    moved = [str(run.relative_to(RESULTS)) for run, a, b in runs if _identity_yaml(a) != _identity_yaml(b)]
    assert not moved, (
        f"{name}: finished runs the grid would now configure differently, so a resumed grid would mix "
        f"two configurations: {moved[:4]} ... Pin the value these runs trained with in the grid file's base."
    )
    assert runs


@pytest.mark.parametrize("name", sorted(UNRESOLVED_RECORDS))
def test_older_grids_keep_the_switched_settings(name):
    """Grids whose records predate resolved parameters cannot be compared whole; the settings whose
    defaults switched after them can (a record without them reads as the run trained)."""
    runs = list(_recorded_and_now(load_grid(RESULTS / f"{name}.yaml"), RESULTS / name))
    for run, recorded, now in runs:
        assert (recorded.data.aux_holdout, recorded.optim.task_gradients) == (
            now.data.aux_holdout,
            now.optim.task_gradients,
        ), run
    assert runs
