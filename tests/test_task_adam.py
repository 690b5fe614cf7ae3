"""PMTRec v4 candidate 1 (b), per-task Adam (``task_adam``; docs/pmtrec-method.md, "PMTRec v4"):
each task's Adam direction per (row, task) against a loop reference of Adam's scalar recurrences,
its independence of an auxiliary task's size, and the trainer stepping the tables by SGD."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pmtrec_lab.errors import ConfigError
from pmtrec_lab.mtl import MethodParamsError, make_method
from pmtrec_lab.mtl.pmtrec.task_adam import BETA1, BETA2, EPS, TaskAdamMoments
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.train import train
from pmtrec_lab.train.optim import PreconditionedTables, make_optimizer
from pmtrec_lab.train.trainer import build_model
from tests.test_pmtrec import make_ctx, random_problem

SYN = {"num_users": 150, "num_items": 90, "interactions_per_user": 12}


def _steps(num_rows=12, k=3, d=4, steps=6, seed=0):
    """Steps whose entities are random subsets of the table rows, with random task sets."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        rows = torch.randperm(num_rows, generator=g)[: num_rows // 2]
        active = torch.rand(k, len(rows), generator=g) < 0.6
        grads = torch.randn(k, len(rows), d, generator=g, dtype=torch.float64) * active.unsqueeze(-1)
        out.append((grads, active, rows))
    return out


def test_directions_match_a_loop_over_adam_s_scalar_recurrences():
    num_rows, k, d = 12, 3, 4
    moments = TaskAdamMoments()
    m = [[[0.0] * d for _ in range(k)] for _ in range(num_rows)]
    v = [[[0.0] * d for _ in range(k)] for _ in range(num_rows)]
    n = [[0] * k for _ in range(num_rows)]
    for grads, active, rows in _steps(num_rows, k, d):
        got = moments.directions(grads, active, rows, num_rows)
        expected = torch.zeros_like(grads)
        for e, row in enumerate(rows.tolist()):
            for t in range(k):
                if not active[t, e]:
                    continue
                n[row][t] += 1
                for c in range(d):
                    x = float(grads[t, e, c])
                    m[row][t][c] = BETA1 * m[row][t][c] + (1 - BETA1) * x
                    v[row][t][c] = BETA2 * v[row][t][c] + (1 - BETA2) * x * x
                    m_hat = m[row][t][c] / (1 - BETA1 ** n[row][t])
                    v_hat = v[row][t][c] / (1 - BETA2 ** n[row][t])
                    expected[t, e, c] = m_hat / (math.sqrt(v_hat) + EPS)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_an_auxiliary_task_s_size_does_not_change_any_task_s_direction():
    """What the candidate is for: a 100x larger auxiliary gradient (amazon's items are 27x) leaves
    the main task's direction and its own unchanged (Adam is scale-free, up to eps)."""
    plain, scaled = TaskAdamMoments(), TaskAdamMoments()
    for grads, active, rows in _steps():
        big = grads.clone()
        big[2] *= 100.0
        a = plain.directions(grads, active, rows, 12)
        b = scaled.directions(big, active, rows, 12)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_the_stage_feeds_every_later_stage_the_directions():
    grads, active, side, losses = random_problem(k=3, e=40, d=8, seed=1, task_scales=(1.0, 30.0, 0.1))
    small = grads.clone()
    small[1] /= 30.0
    a = make_method("pmtrec", 3, task_adam=True).combine(grads, active, side, losses, make_ctx(0, k=3, e=40))
    b = make_method("pmtrec", 3, task_adam=True).combine(small, active, side, losses, make_ctx(0, k=3, e=40))
    torch.testing.assert_close(a.combined, b.combined, rtol=1e-4, atol=1e-4)  # eps: 1e-8 on |g| ~ 1e-4
    c = make_method("pmtrec", 3).combine(grads, active, side, losses, make_ctx(0, k=3, e=40))
    d = make_method("pmtrec", 3).combine(small, active, side, losses, make_ctx(0, k=3, e=40))
    assert (c.combined - d.combined).abs().max() > 0.1  # without it, the size does change the step


def test_task_adam_and_moment_balance_are_alternatives():
    with pytest.raises(MethodParamsError, match="alternatives"):
        make_method("pmtrec", 3, task_adam=True, moment_balance=True)


def _cfg(**update):
    cfg = notebook_config(
        dataset="synthetic",
        loader_args=SYN,
        k_core=2,
        dim=8,
        epochs=3,
        lr=0.01,
        method="pmtrec",
        method_params={"task_adam": True},
        batch_size=256,
    )
    return cfg.model_copy(update={"optim": cfg.optim.model_copy(update=update)}) if update else cfg


def test_the_trainer_steps_the_tables_by_sgd_and_the_run_resumes_to_the_same_numbers(tmp_path):
    from pmtrec_lab.data import dataset_for_config

    cfg = _cfg()
    model = build_model(cfg, dataset_for_config(cfg.data))
    opt = make_optimizer(cfg, model, own_preconditioning=True)
    assert isinstance(opt, PreconditionedTables) and isinstance(opt.sparse, torch.optim.SGD)
    tables = {id(p) for p in opt.sparse.param_groups[0]["params"]}
    assert tables and all(
        isinstance(m, torch.nn.Embedding) for m in model.modules() if id(getattr(m, "weight", None)) in tables
    )
    whole = train(cfg, tmp_path / "whole")
    train(cfg, tmp_path / "paused", max_epochs_this_call=1)
    resumed = train(cfg, tmp_path / "paused")
    assert resumed.metrics["test"] == whole.metrics["test"]
    plain = train(
        _cfg().model_copy(update={"method": cfg.method.model_copy(update={"params": {}})}), tmp_path / "plain"
    )
    assert plain.metrics["test"] != whole.metrics["test"]
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert history[-1]["loss/rec"] < history[0]["loss/rec"]  # the main task learns


def test_sparse_or_lazy_tables_are_refused_naming_the_settings(tmp_path):
    with pytest.raises(ConfigError, match="optim.sparse=false and optim.optimizer=adam"):
        train(_cfg(optimizer="lazy_adam"), tmp_path / "lazy")
