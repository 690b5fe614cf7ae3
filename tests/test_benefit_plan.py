"""The benefit map's grids: variants that leave one auxiliary task out (``leave_out``), checked
when the grid loads, hashed into run names only when present, and the committed grid files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pmtrec_lab.benefit.plan import EW_LR, WEIGHTINGS, benefit_grid, variant_label, weights_grid
from pmtrec_lab.compare.layout import run_name
from pmtrec_lab.compare.spec import GridSpec, load_grid, run_config
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.tasks import resolve_task_configs

REPO = Path(__file__).resolve().parents[1]


def _grid(**variants) -> GridSpec:
    return GridSpec(datasets=["ciao"], methods=["ew", *variants], seeds=[0], lrs=[1e-3], variants=variants)


@pytest.mark.parametrize(
    "left_out,trained",
    [
        (["social:trust"], ["rec", "item_label:category"]),
        (["item_label:category"], ["rec", "social:trust"]),
        (["social:trust", "item_label:category"], ["rec"]),
    ],
)
def test_a_variant_trains_without_the_tasks_it_leaves_out(left_out, trained):
    spec = _grid(drop={"name": "ew", "leave_out": left_out})
    cfg = run_config(spec, "ciao", "drop", 1e-3, 0, None)
    assert [t.resolved_name() for t in resolve_task_configs(cfg)] == trained
    full = run_config(spec, "ciao", "ew", 1e-3, 0, None)
    assert len(resolve_task_configs(full)) == 3


@pytest.mark.parametrize(
    "leave_out,message",
    [
        (["social:friends"], r"'social:friends' is not an auxiliary task this run trains on dataset 'ciao'"),
        ([], r"expected a non-empty list of auxiliary task names"),
        ("social:trust", r"expected a non-empty list"),
        (["social:trust", "social:trust"], r"listed more than once"),
    ],
)
def test_a_bad_leave_out_is_refused_when_the_grid_loads(leave_out, message, tmp_path):
    grid = {
        "datasets": ["ciao"],
        "methods": ["ew", "drop"],
        "seeds": [0],
        "lrs": [1e-3],
        "variants": {"drop": {"name": "ew", "leave_out": leave_out}},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match=rf"{path}: variants\.drop\.leave_out: .*{message}"):
        load_grid(path)


def test_leave_out_enters_the_run_name_only_when_present():
    spec = _grid(drop={"name": "ew", "leave_out": ["social:trust"]}, same={"name": "ew"})
    plain = run_name(spec, "ew", 1e-3, 0, "ciao")
    assert run_name(spec, "same", 1e-3, 0, "ciao") == plain  # a variant without leave_out: the old name
    assert run_name(spec, "drop", 1e-3, 0, "ciao") != plain


@pytest.mark.parametrize("dataset", sorted(EW_LR))
def test_committed_benefit_grids_are_what_the_plan_writes(dataset):
    path = REPO / "results" / "benefit-map" / f"{dataset}.yaml"
    assert yaml.safe_load(path.read_text()) == benefit_grid(dataset)
    spec = load_grid(path)
    assert spec.lrs == [EW_LR[dataset]] and spec.seeds == [0, 1, 2]
    grid_v3 = yaml.safe_load((REPO / "results" / "grid-v3.yaml").read_text())
    assert spec.base == grid_v3["base"]  # the v3 grid's protocol
    for label, variant in spec.variants.items():
        assert label == variant_label(variant["leave_out"][0])
    weights = REPO / "results" / "benefit-map" / f"{dataset}-weights.yaml"
    assert yaml.safe_load(weights.read_text()) == weights_grid(dataset)
    scored = load_grid(weights)
    assert scored.methods == list(WEIGHTINGS) and scored.lrs == spec.lrs and scored.base == spec.base


def test_ew_in_a_benefit_grid_is_the_v3_grids_ew_run():
    """Same configuration, same run name: the map's EW runs are the grid's (they retrain only to
    record per-entity validation metrics)."""
    benefit = load_grid(REPO / "results" / "benefit-map" / "ciao.yaml")
    v3 = load_grid(REPO / "results" / "grid-v3.yaml")
    for method in ("ew", "single-task"):
        assert run_name(benefit, method, 1e-3, 1, "ciao") == run_name(v3, method, 1e-3, 1, "ciao")
        ours, theirs = (run_config(g, "ciao", method, 1e-3, 1, None) for g in (benefit, v3))
        assert ours == theirs
