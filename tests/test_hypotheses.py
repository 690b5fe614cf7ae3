"""PMTRec v3's hypotheses judged from a grid's tables (``compare/hypotheses.py``), on the committed
v2 grid (whose figures the README and docs/results.md report) and on planted tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pmtrec_lab.compare.hypotheses import _all, _at_least, judge, main

GRID = Path(__file__).resolve().parents[1] / "results" / "grid"


def test_three_valued_logic():
    assert _all([True, True]) is True and _all([True, None]) is None and _all([None, False]) is False
    assert _at_least([True, True, None], 2) is True
    assert _at_least([True, None, False], 2) is None
    assert _at_least([True, False, False], 2) is False


def test_the_v2_grid_fails_h1_and_h2_and_h3s_first_comparison():
    """The figures the results page reports for v2: no dataset where PMTRec leads its strongest
    baseline significantly, 18% below single-task on amazon, shared weights ahead on lastfm."""
    evidence, verdicts = judge(GRID)
    by = evidence.set_index("dataset")
    assert list(by.index) == ["ciao", "lastfm", "amazon"]
    assert by.loc["amazon", "strongest_baseline"] == "single-task"
    assert by.loc["amazon", "vs_single_task"] == pytest.approx(-0.180, abs=1e-3)
    assert by.loc["lastfm", "h2_holds"] and not by.loc["amazon", "h2_holds"]
    first = "pmtrec vs pmtrec-no-personalization"
    assert by.loc["lastfm", f"{first}: diff"] < 0 and by.loc["lastfm", f"{first}: p"] < 1e-5
    assert not by[f"{first}: ahead"].any()
    assert by["pmtrec-delta vs pmtrec-delta-permuted: ahead"].isna().all()  # not run in v2
    assert verdicts == {"H1": False, "H2": False, "H3": False}


def _grid(tmp_path: Path, means: dict[str, float], per_user: dict[str, list[float]]) -> Path:
    rows = [{"dataset": "d", "method": m, "ndcg20_mean": v} for m, v in means.items()]
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame([{"dataset": "d", "baseline": "ew", "valid_ndcg20": 0.1}]).to_csv(
        tmp_path / "strongest_baseline.csv", index=False
    )
    pd.DataFrame([{"dataset": "d", "method": "pmtrec", "p_value": 0.01}]).to_csv(
        tmp_path / "significance.csv", index=False
    )
    users = [
        {"dataset": "d", "method": m, "seed": 0, "user": u, "ndcg@20": v}
        for m, values in per_user.items()
        for u, v in enumerate(values)
    ]
    pd.DataFrame(users).to_parquet(tmp_path / "per_user_ndcg.parquet")
    return tmp_path


def test_planted_grid_one_dataset(tmp_path, capsys):
    up = [0.2 + 0.001 * i for i in range(40)]
    down = [v - 0.05 for v in up]
    out = _grid(
        tmp_path,
        {"pmtrec": 0.30, "ew": 0.25, "single-task": 0.305},
        {"pmtrec": up, "pmtrec-no-personalization": down},
    )
    evidence, verdicts = judge(out)
    row = evidence.iloc[0]
    assert row["h1_not_below"] and row["h1_ahead"]
    assert row["h2_holds"]  # 1.6% below single-task: within 2%
    assert row["pmtrec vs pmtrec-no-personalization: ahead"]
    # one dataset can show H1's "ahead on two" and H3 only as impossible: they fail
    assert verdicts == {"H1": False, "H2": True, "H3": False}
    assert main([str(out)]) == 0 and "'H2': 'holds'" in capsys.readouterr().out


def test_unfinished_runs_leave_a_dataset_undecided(tmp_path):
    """A partial grid's tables must not decide: with one seed of single-task missing, H2 is
    undecided there, and H1 too (its strongest baseline is chosen among every method)."""
    up = [0.2 + 0.001 * i for i in range(40)]
    out = _grid(
        tmp_path,
        {"pmtrec": 0.30, "ew": 0.25, "single-task": 0.305},
        {"pmtrec": up, "pmtrec-no-personalization": [v - 0.05 for v in up]},
    )
    progress = [
        {"dataset": "d", "method": m, "done": done, "planned": 4}
        for m, done in (("pmtrec", 4), ("ew", 4), ("single-task", 3), ("pmtrec-no-personalization", 4))
    ]
    pd.DataFrame(progress).to_csv(out / "progress.csv", index=False)
    row = judge(out)[0].iloc[0]
    assert row["h2_holds"] is None and row["h1_not_below"] is None and row["h1_ahead"] is None
    assert row["pmtrec vs pmtrec-no-personalization: ahead"]  # its two methods are complete
    progress[2]["done"] = 4
    pd.DataFrame(progress).to_csv(out / "progress.csv", index=False)
    row = judge(out)[0].iloc[0]
    assert row["h2_holds"] and row["h1_not_below"] and row["h1_ahead"]
