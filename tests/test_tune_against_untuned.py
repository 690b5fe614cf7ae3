"""The tuned-against-untuned table (``pmtrec_lab.tune.against_untuned``) on two real tiny grids:
an untuned one (learning rates chosen on seed 0, static-lambda's fixed weights) and one run from
a study's ``best.yaml`` files through ``compare --tuned``'s path (``with_tuned``)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from pmtrec_lab.compare import GridSpec, collect, run_grid
from pmtrec_lab.tune.against_untuned import markdown, tuned_against_untuned
from pmtrec_lab.tune.output import with_tuned, write_unit

BASE = {
    "data": {"loader_args": {"num_users": 120, "num_items": 80}},
    "encoder": {"name": "mf", "dim": 8},
    "optim": {"epochs": 2, "batch_size": 512},
    "progress": "none",
}


def _trials(scores: list[float], epochs: list[int], stopped: list[bool]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial": range(1, len(scores) + 1),
            "trial_id": [f"t{i}" for i in range(len(scores))],
            "optim.lr": 0.01,
            "epochs_run": epochs,
            "best_valid_ndcg@20": scores,
            "best_epoch": 1,
            "stopped_early": stopped,
        }
    )


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    root = tmp_path_factory.mktemp("against")
    untuned = GridSpec(
        datasets=["synthetic"],
        methods=["single-task", "ew", "static0.5"],
        seeds=[0, 1],
        lrs=[0.01, 0.03],
        base=BASE,
        variants={"static0.5": {"name": "static-lambda", "params": {"weight": 0.5}}},
    )
    run_grid(untuned, root / "untuned")
    study = root / "study"
    write_unit(
        study,
        "synthetic",
        "ew",
        _trials([0.10, 0.20, 0.05], [2, 2, 1], [False, False, True]),
        {"dataset": "synthetic", "method": "ew", "lr": 0.02, "weight_decay": 0.0, "params": {}},
    )
    write_unit(
        study,
        "synthetic",
        "static-lambda",
        _trials([0.30, 0.01], [2, 1], [False, True]),
        {
            "dataset": "synthetic",
            "method": "static-lambda",
            "lr": 0.02,
            "weight_decay": 1e-6,
            "params": {"weight": 0.25},
        },
    )
    tuned = with_tuned(
        GridSpec(
            datasets=["synthetic"], methods=["ew", "static-lambda"], seeds=[0, 1], lrs=[0.01, 0.03], base=BASE
        ),
        study,
    )
    run_grid(tuned, root / "tuned")
    return root


def test_table_reads_both_grids_and_the_study(grids):
    table = tuned_against_untuned(grids / "tuned", grids / "untuned").set_index("method")
    untuned = collect(grids / "untuned", _spec_of(grids / "untuned"))
    seed0 = untuned[untuned["seed"] == 0]

    # EW: its own better learning rate on seed 0, and that learning rate's test mean over both seeds
    ew0 = seed0[seed0["method"] == "ew"].sort_values("valid_ndcg@20").iloc[-1]
    assert table.loc["ew", "untuned"] == f"ew lr {ew0['lr']:g}"
    assert table.loc["ew", "untuned_valid"] == pytest.approx(100 * ew0["valid_ndcg@20"])
    ew_test = untuned[(untuned["method"] == "ew") & (untuned["lr"] == ew0["lr"])]["test_ndcg@20"]
    assert table.loc["ew", "untuned_test"] == pytest.approx(100 * ew_test.mean())
    assert table.loc["ew", "untuned_seeds"] == 2

    # static-lambda: its one variant at the variant's seed-0-chosen learning rate; single-task and
    # EW compete as methods of their own (the strongest-baseline rule), so neither stands for it
    s0 = seed0[seed0["method"] == "static0.5"].sort_values("valid_ndcg@20").iloc[-1]
    assert table.loc["static-lambda", "untuned"] == f"static0.5 lr {s0['lr']:g}"
    at_lr = untuned[(untuned["method"] == "static0.5") & (untuned["lr"] == s0["lr"])]
    mean_valid = 100 * at_lr["valid_ndcg@20"].mean()
    assert table.loc["static-lambda", "untuned_valid_mean"] == pytest.approx(mean_valid)

    # the study: best trial score, and the trials ASHA cut within two epochs
    assert table.loc["ew", "best_trial_valid"] == pytest.approx(20.0)
    assert table.loc["ew", "cut_by_asha"] == 1 and table.loc["ew", "trials"] == 3
    assert table.loc["static-lambda", "best_trial_valid"] == pytest.approx(30.0)

    # the tuned grid: seed 0's validation and the test mean over its seeds, at the tuned configuration
    tuned = collect(grids / "tuned", _spec_of(grids / "tuned"))
    assert set(tuned["lr"]) == {0.02}
    for method in ("ew", "static-lambda"):
        runs = tuned[tuned["method"] == method]
        assert table.loc[method, "tuned_valid"] == pytest.approx(
            100 * runs[runs["seed"] == 0]["valid_ndcg@20"].iloc[0]
        )
        assert table.loc[method, "tuned_test"] == pytest.approx(100 * runs["test_ndcg@20"].mean())
    text = markdown(table.reset_index())
    assert "| synthetic | ew | ew lr" in text and "1 of 3" in text


def _spec_of(folder):
    from pmtrec_lab.compare import load_grid

    return load_grid(folder / "grid.resolved.yaml")


def test_static_lambdas_untuned_choice_ranks_variants_by_mean_validation_over_seeds():
    """Among several variants, each at its seed-0-chosen learning rate, the one with the best mean
    validation over seeds stands for static-lambda, even when another has the best seed-0 run."""
    from pmtrec_lab.tune.against_untuned import _untuned_choice

    runs = pd.DataFrame(
        [
            # static0.1: best seed 0 (0.30 at lr 0.01), but its mean at that lr is 0.20
            ("static0.1", 0.01, 0, 0.30), ("static0.1", 0.03, 0, 0.25), ("static0.1", 0.01, 1, 0.10),
            # static0.3: seed 0 chooses lr 0.03 (0.28), whose mean over seeds is 0.27
            ("static0.3", 0.01, 0, 0.20), ("static0.3", 0.03, 0, 0.28), ("static0.3", 0.03, 1, 0.26),
            # a higher mean at the learning rate seed 0 did not choose does not count
            ("static0.3", 0.01, 1, 0.90),
        ],
        columns=["method", "lr", "seed", "valid_ndcg@20"],
    )
    method, lr, seed0_valid, mean_valid = _untuned_choice(runs, ["static0.1", "static0.3"])
    assert (method, lr) == ("static0.3", 0.03)
    assert seed0_valid == pytest.approx(0.28) and mean_valid == pytest.approx(0.27)
    assert _untuned_choice(runs, ["static0.9"]) is None


@pytest.mark.parametrize("max_epochs", [3, 7, 200])
def test_compare_tuned_trains_the_studys_epoch_budget_not_the_grids(tmp_path, max_epochs):
    """A configuration chosen for what it reached within the study's ``max_epochs`` is retrained
    with that budget: ``study.yaml``'s ``max_epochs`` replaces the grid's ``optim.epochs`` (2
    here). Without a ``study.yaml`` the grid's own cap stays; a broken budget is refused by name."""
    from pmtrec_lab.errors import ConfigError
    from pmtrec_lab.tune.output import STUDY_FILE

    study = tmp_path / "study"
    write_unit(
        study,
        "synthetic",
        "ew",
        _trials([0.1], [1], [False]),
        {"dataset": "synthetic", "method": "ew", "lr": 0.02, "weight_decay": 0.0, "params": {}},
    )
    grid = GridSpec(datasets=["synthetic"], methods=["ew"], seeds=[0], lrs=[0.01], base=BASE)
    assert with_tuned(grid, study).base["optim"]["epochs"] == 2  # no study.yaml: the grid's cap
    (study / STUDY_FILE).write_text(f"budget:\n  trials: 1\n  max_epochs: {max_epochs}\n")
    tuned = with_tuned(grid, study)
    assert tuned.base["optim"]["epochs"] == max_epochs
    assert tuned.base["optim"]["batch_size"] == 512  # the rest of the grid's base is kept
    (study / STUDY_FILE).write_text("budget:\n  max_epochs: many\n")
    with pytest.raises(ConfigError, match="budget.max_epochs"):
        with_tuned(grid, study)


def test_grid_trials_finds_a_relative_study_from_outside_the_project_root(tmp_path, monkeypatch):
    """A tuned grid records its studies' ``best.yaml`` as ``compare`` was given them (relative to
    the project root it ran in); a notebook's kernel runs elsewhere and still finds the trials."""
    from pmtrec_lab.tune.output import grid_trials

    unit = tmp_path / "results" / "study" / "ciao" / "ew"
    unit.mkdir(parents=True)
    _trials([0.1, 0.2], [10, 20], [False, False]).to_csv(unit / "trials.csv", index=False)
    grid = tmp_path / "results" / "grid-tuned"
    grid.mkdir()
    tuned = {"tuned": {"ciao": {"ew": {"source": "results/study/ciao/ew/best.yaml"}}}}
    (grid / "grid.resolved.yaml").write_text(yaml.safe_dump(tuned))
    monkeypatch.chdir(tmp_path / "results")  # not the folder compare ran in
    found = grid_trials(grid)
    assert list(found["dataset"]) == ["ciao", "ciao"] and list(found["trial"]) == [1, 2]
    tuned["tuned"]["ciao"]["ew"]["source"] = "results/nowhere/best.yaml"
    (grid / "grid.resolved.yaml").write_text(yaml.safe_dump(tuned))
    assert grid_trials(grid).empty
