"""The v4 study's rule (pmtrec_lab/compare/study_rule.py; docs/pmtrec-method.md, "PMTRec v4"):
planted tables where one dataset's gain would hide another's loss, ties, missing datasets, and a
real grid judged from its run folders' validation metrics only."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from pmtrec_lab.compare import GridSpec, run_grid
from pmtrec_lab.compare.study_rule import judge, load_study, main

DATASETS = ("ciao", "lastfm", "amazon", "ml-100k")


def _runs(changes: dict[str, dict[str, float]], seconds: dict[str, float] | None = None) -> pd.DataFrame:
    """Two seeds per (method, dataset) whose mean is the base's 0.1 times (1 + change)."""
    rows = []
    for method, per_dataset in {"pmtrec": dict.fromkeys(DATASETS, 0.0), **changes}.items():
        for d, change in per_dataset.items():
            for seed, jitter in ((0, -0.001), (1, 0.001)):
                cost = (seconds or {}).get(method, 100.0)
                valid = 0.1 * (1 + change) + jitter
                rows.append({"dataset": d, "method": method, "seed": seed, "valid": valid, "seconds": cost})
    return pd.DataFrame(rows)


def test_a_large_gain_on_one_dataset_cannot_buy_a_loss_on_another():
    runs = _runs(
        {
            "v3-like": {"ciao": -0.08, "lastfm": 0.0, "amazon": 0.05, "ml-100k": 0.44},  # mean +10%
            "steady": {"ciao": 0.01, "lastfm": 0.01, "amazon": 0.01, "ml-100k": 0.01},
            "mostly": {"ciao": -0.005, "lastfm": 0.02, "amazon": 0.02, "ml-100k": 0.02},
        }
    )
    table, winner = judge(runs)
    rows = table.set_index("candidate")
    assert not rows.loc["v3-like", "qualifies"] and rows.loc["v3-like", "mean"] == pytest.approx(0.1025)
    assert rows.loc["mostly", "qualifies"] and rows.loc["steady", "qualifies"]
    assert rows.loc["mostly", "smallest"] == pytest.approx(-0.005)
    assert winner == "steady"  # the largest smallest change, not the largest mean


def test_ties_go_to_the_cheaper_candidate_and_nothing_qualifying_keeps_the_base():
    changes = {"fast": dict.fromkeys(DATASETS, 0.010), "slow": dict.fromkeys(DATASETS, 0.012)}
    _, winner = judge(_runs(changes, seconds={"pmtrec": 100.0, "fast": 110.0, "slow": 180.0}))
    assert winner == "fast"  # 0.2 pp apart: tied; fast costs 1.1x, slow 1.8x
    changes["slow"] = dict.fromkeys(DATASETS, 0.016)
    assert judge(_runs(changes, seconds={"fast": 110.0, "slow": 180.0}))[1] == "slow"  # 0.6 pp: not tied
    assert judge(_runs({"small": dict.fromkeys(DATASETS, 0.004)}))[1] is None  # mean below +0.5%


def test_a_candidate_missing_a_dataset_does_not_qualify():
    runs = _runs({"partial": {"ciao": 0.05, "lastfm": 0.05, "amazon": 0.05}})
    table, winner = judge(runs)
    assert winner is None and pd.isna(table.loc[0, "ml-100k"]) and not table.loc[0, "qualifies"]
    with pytest.raises(ValueError, match="base 'ew'"):
        judge(runs, base="ew")


@pytest.mark.slow
def test_a_real_study_folder_is_judged_from_validation_metrics_only(tmp_path):
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["pmtrec", "task-adam"],
        seeds=[0, 1],
        lrs=[0.01],
        pmtrec="pmtrec",
        variants={"task-adam": {"name": "pmtrec", "params": {"task_adam": True}}},
        base={
            "data": {"loader_args": {"num_users": 150, "num_items": 90}},
            "encoder": {"name": "mf", "dim": 16},
            "optim": {"epochs": 2, "batch_size": 512},
            "progress": "none",
        },
    )
    (tmp_path / "synthetic.yaml").write_text(
        yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True))
    )
    assert run_grid(spec, tmp_path / "synthetic") == 4
    runs = load_study(tmp_path)
    assert len(runs) == 4
    valid = {}
    for rd in (tmp_path / "synthetic" / "runs").glob("synthetic/*/*"):
        metrics = json.loads((rd / "metrics.json").read_text())
        valid[(rd.parent.name, int(rd.name.split("-seed")[1][0]))] = metrics["valid"]["ndcg@20"]
    assert {(r.method, r.seed): r.valid for r in runs.itertuples()} == valid
    assert main([str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "rule.csv")
    base = (valid[("pmtrec", 0)] + valid[("pmtrec", 1)]) / 2
    cand = (valid[("task-adam", 0)] + valid[("task-adam", 1)]) / 2
    assert table.loc[0, "synthetic"] == pytest.approx(cand / base - 1)
    assert "Chosen:" in (tmp_path / "rule.md").read_text()
