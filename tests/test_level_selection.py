"""PMTRec v4 candidate 1 (a), the auxiliary levels chosen inside the run (``level_select``;
docs/pmtrec-method.md, "PMTRec v4"): the level is a linear factor of the combination, and the
trainer's successive halving is checked against a loop reference that trains every branch as a run
of its own (one candidate each), with its scores, its choice and the run after it equal to the digit."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from pmtrec_lab.errors import ConfigError
from pmtrec_lab.mtl import MethodParamsError, make_method
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.train import train
from tests.test_pmtrec import make_ctx, random_problem

SYN = {"num_users": 150, "num_items": 90, "interactions_per_user": 12}
VALUES = [1.0, 0.3, 0.1, 0.0]


def _combine(method, levels, problem, steps=3):
    """The combined gradients of ``steps`` steps of a copy of ``method`` at ``levels``."""
    m = copy.deepcopy(method)
    if levels is not None:
        m.set_levels(levels)
    grads, active, side, losses = problem
    out = []
    for t in range(steps):
        res = m.combine(grads * (1 + 0.1 * t), active, side, losses, make_ctx(t, k=3, e=grads.shape[1]))
        out.append((res.combined, res.head_weights))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_combination_is_linear_in_the_levels_and_level_one_changes_nothing(seed):
    problem = random_problem(k=3, e=60, d=8, seed=seed, conflict=0.5)
    plain = make_method("pmtrec", 3)
    levelled = make_method("pmtrec", 3, level_select=True)
    # all levels 1: bit for bit the method without the stage (the factor multiplies by 1.0)
    for (a, ha), (b, hb) in zip(_combine(plain, None, problem), _combine(levelled, [1.0, 1.0, 1.0], problem)):
        assert torch.equal(a, b) and torch.equal(ha, hb)
    base = [c for c, _ in _combine(levelled, [1.0, 0.0, 0.0], problem)]
    one = [c for c, _ in _combine(levelled, [1.0, 1.0, 0.0], problem)]
    two = [c for c, _ in _combine(levelled, [1.0, 0.0, 1.0], problem)]
    mixed = _combine(levelled, [1.0, 0.3, 0.7], problem)
    for t, (c, heads) in enumerate(mixed):
        expected = base[t] + 0.3 * (one[t] - base[t]) + 0.7 * (two[t] - base[t])
        torch.testing.assert_close(c, expected, rtol=0, atol=1e-12)
        assert torch.equal(heads, _combine(plain, None, problem)[t][1])  # heads are not levelled
        assert not torch.allclose(c, base[t])


def test_a_level_of_zero_takes_a_task_off_the_rows_it_alone_touches():
    grads, active, side, losses = random_problem(k=3, e=80, d=8, seed=3)
    method = make_method("pmtrec", 3, level_select=True)
    method.set_levels([1.0, 0.0, 0.0])
    res = method.combine(grads, active, side, losses, make_ctx(0, k=3, e=80))
    aux_only = ~active[:, 0].bool()
    assert bool(aux_only.any())
    assert torch.equal(res.combined[aux_only], torch.zeros_like(res.combined[aux_only]))


def test_levels_are_checked_when_set_and_when_configured():
    method = make_method("pmtrec", 3, level_select=True)
    with pytest.raises(ValueError, match="main task's 1"):
        method.set_levels([0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="3 values"):
        method.set_levels([1.0, 1.0])
    with pytest.raises(MethodParamsError, match="level_values"):
        make_method("pmtrec", 3, level_select=True, level_values=[1.0, -0.1])
    with pytest.raises(MethodParamsError, match="level_values"):
        make_method("pmtrec", 3, level_select=True, level_values=[1.0, 1.0])
    with pytest.raises(MethodParamsError, match="level_at"):
        make_method("pmtrec", 3, level_select=True, level_at=[5, 3])
    with pytest.raises(AttributeError, match="level_select=False"):
        make_method("pmtrec", 3).set_levels([1.0, 1.0, 1.0])


def test_the_new_parameters_at_their_defaults_leave_run_names_alone():
    neutral = PMTRecParams.name_neutral
    defaults = PMTRecParams().as_dict()
    assert {k: defaults[k] for k in neutral} == dict(neutral)
    assert set(neutral) == {k for k in defaults if k.startswith("level_")} | {"task_adam"}


def _run(tmp_path, name, meta_split=True, epochs=4, max_epochs_this_call=None, **params):
    cfg = notebook_config(
        dataset="synthetic",
        loader_args=SYN,
        k_core=2,
        dim=8,
        epochs=epochs,
        lr=0.01,
        method="pmtrec",
        method_params={"level_select": True, "level_at": [2], "level_scope": "joint", **params},
        batch_size=256,
    )
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"meta_split": meta_split})})
    return train(cfg, tmp_path / name, max_epochs_this_call=max_epochs_this_call)


def _rounds(tmp_path, name):
    return json.loads((tmp_path / name / "level_selection.json").read_text())


def _history(tmp_path, name):
    return json.loads((tmp_path / name / "history.json").read_text())


def _trajectory(run):
    drop = {"seconds", "branch_epochs"}
    history = json.loads((run.path / "history.json").read_text())
    return [{k: v for k, v in r.items() if k not in drop} for r in history], run.metrics["test"]


def test_selection_matches_a_loop_reference_that_trains_every_branch_as_its_own_run(tmp_path):
    full = _run(tmp_path, "all", level_values=VALUES)
    (round_,) = _rounds(tmp_path, "all")
    (group,) = round_["groups"]
    first, second = group["scores"]
    assert group["candidates"] == VALUES and round_["epoch"] == 2
    assert round_["branch_epochs"] == 4 + 2 and _history(tmp_path, "all")[2]["branch_epochs"] == 6
    # the reference: each candidate alone (its branch is the whole round), one and two epochs long
    for i, value in enumerate(VALUES):
        _run(tmp_path, f"one-{i}", level_values=[value])
        assert _rounds(tmp_path, f"one-{i}")[0]["groups"][0]["scores"] == [[first[i]]]
        if second[i] is not None:
            _run(tmp_path, f"two-{i}", level_values=[value], level_branch_epochs=2)
            assert _rounds(tmp_path, f"two-{i}")[0]["groups"][0]["scores"] == [[second[i]]]
    # halving: the better half of the first stage went on, and the best of the second was chosen
    ranked = sorted(range(4), key=lambda i: (-first[i], i))
    assert [i for i in range(4) if second[i] is not None] == sorted(ranked[:2])
    chosen = max(ranked[:2], key=lambda i: (second[i], -i))
    assert group["chosen"] == VALUES[chosen]
    assert round_["levels"] == {n: (1.0 if n == "rec" else VALUES[chosen]) for n in round_["levels"]}
    # the run after the round is the run that had only the chosen level: branches leave no trace
    assert _trajectory(full) == _trajectory(_run(tmp_path, "chosen", level_values=[VALUES[chosen]]))


@pytest.mark.parametrize("pause_after", [2, 3])
def test_a_run_paused_before_or_after_its_round_resumes_to_the_same_numbers(tmp_path, pause_after):
    whole = _run(tmp_path, "whole", level_values=VALUES)
    _run(tmp_path, "paused", level_values=VALUES, max_epochs_this_call=pause_after)
    assert (tmp_path / "paused" / "level_selection.json").is_file() == (pause_after > 2)
    resumed = _run(tmp_path, "paused", level_values=VALUES)
    assert _trajectory(resumed) == _trajectory(whole)
    assert _rounds(tmp_path, "paused") == _rounds(tmp_path, "whole")


def test_per_task_scope_searches_each_auxiliary_task_in_turn(tmp_path):
    _run(tmp_path, "per-task", level_values=[1.0, 0.0], level_scope="auto")
    (round_,) = _rounds(tmp_path, "per-task")
    tasks = [g["tasks"] for g in round_["groups"]]
    assert tasks == [[n] for n in round_["levels"] if n != "rec"]  # two auxiliary tasks: one at a time
    assert round_["branch_epochs"] == 2 * len(tasks)
    assert round_["levels"] == {"rec": 1.0, **{g["tasks"][0]: g["chosen"] for g in round_["groups"]}}


def test_level_selection_without_a_meta_split_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="data.meta_split=true"):
        _run(tmp_path, "no-meta", meta_split=False)
