"""``LazyAdam`` and ``optim.optimizer=lazy_adam``: dense Adam's update on rows touched at every step,
each row bias-corrected by its own step count, untouched rows (values, moments, counts) left
alone, state through ``torch.load(weights_only=True)``, and training that resumes exactly."""

from __future__ import annotations

import pytest
import torch

from pmtrec_lab.config import load_config
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.train import build_model, train
from pmtrec_lab.train.lazy_adam import LazyAdam
from pmtrec_lab.train.optim import LazyDenseAdam, make_optimizer
from pmtrec_lab.train.run import load_checkpoint
from tests.helpers import tiny_synthetic
from tests.test_training import small_cfg

N, D = 12, 5


def _sparse_grad(rows: torch.Tensor, values: torch.Tensor, n: int = N) -> torch.Tensor:
    """An uncoalesced COO gradient (repeats allowed), as ``nn.Embedding(sparse=True)`` gives."""
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, (n, values.shape[1]), check_invariants=True)


def _grads(steps: int, seed: int, rows_per_step=None):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        rows = torch.arange(N) if rows_per_step is None else torch.randperm(N, generator=gen)[:rows_per_step]
        rows = torch.cat([rows, rows[:3]])  # repeated lookups are summed
        out.append((rows, torch.randn(rows.numel(), D, generator=gen)))
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_rows_touched_at_every_step_follow_dense_adam(weight_decay):
    init = torch.randn(N, D, generator=torch.Generator().manual_seed(0))
    lazy_p = torch.nn.Parameter(init.clone())
    dense_p = torch.nn.Parameter(init.clone())
    lazy = LazyAdam([lazy_p], lr=0.05, weight_decay=weight_decay)
    dense = torch.optim.Adam([dense_p], lr=0.05, weight_decay=weight_decay)
    for rows, values in _grads(25, seed=1):
        g = _sparse_grad(rows, values)
        lazy_p.grad = g
        dense_p.grad = g.to_dense()
        lazy.step()
        dense.step()
    torch.testing.assert_close(lazy_p, dense_p, rtol=1e-6, atol=1e-7)
    st_l, st_d = lazy.state[lazy_p], dense.state[dense_p]
    torch.testing.assert_close(st_l["exp_avg"], st_d["exp_avg"], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(st_l["exp_avg_sq"], st_d["exp_avg_sq"], rtol=1e-6, atol=1e-10)
    assert st_l["step"].tolist() == [25] * N


def test_each_row_is_adam_over_the_steps_that_touched_it():
    """A row's trajectory is dense Adam run on that row alone over its own steps (so a row first
    touched late gets Adam's first step, bias-corrected by its count, not the table's)."""
    init = torch.randn(N, D, generator=torch.Generator().manual_seed(2))
    p = torch.nn.Parameter(init.clone())
    opt = LazyAdam([p], lr=0.03)
    grads = _grads(30, seed=3, rows_per_step=4)
    for rows, values in grads:
        p.grad = _sparse_grad(rows, values)
        before = p.detach().clone()
        opt.step()
        untouched = torch.ones(N, dtype=torch.bool)
        untouched[rows] = False
        assert torch.equal(p.detach()[untouched], before[untouched])
    counts = torch.zeros(N, dtype=torch.int64)
    for r in range(N):
        row = torch.nn.Parameter(init[r : r + 1].clone())
        ref = torch.optim.Adam([row], lr=0.03)
        for rows, values in grads:
            hit = rows == r
            if hit.any():
                row.grad = values[hit].sum(0, keepdim=True)
                ref.step()
                counts[r] += 1
        torch.testing.assert_close(p.detach()[r : r + 1], row.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(opt.state[p]["step"], counts) and int(counts.min()) < 30
    # the contrast: SparseAdam's one step count per table gives another result on such rows
    q = torch.nn.Parameter(init.clone())
    sparse = torch.optim.SparseAdam([q], lr=0.03)
    for rows, values in grads:
        q.grad = _sparse_grad(rows, values).coalesce()
        sparse.step()
    assert not torch.allclose(q, p, atol=1e-4)


def test_untouched_moments_and_counts_stay():
    p = torch.nn.Parameter(torch.zeros(N, D))
    opt = LazyAdam([p], lr=0.1)
    p.grad = _sparse_grad(torch.tensor([0, 1, 2]), torch.ones(3, D))
    opt.step()
    st = {k: v.clone() for k, v in opt.state[p].items()}
    p.grad = _sparse_grad(torch.tensor([2, 5]), torch.ones(2, D))
    opt.step()
    after = opt.state[p]
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(after[key][[0, 1]], st[key][[0, 1]]), key
        assert not torch.equal(after[key][[2, 5]], st[key][[2, 5]]), key
    assert after["step"].tolist()[:6] == [1, 1, 2, 0, 0, 1]


def test_a_dense_gradient_touches_every_row():
    p = torch.nn.Parameter(torch.ones(N, D))
    ref = torch.nn.Parameter(torch.ones(N, D))
    opt, dense = LazyAdam([p], lr=0.1), torch.optim.Adam([ref], lr=0.1)
    for k in range(3):
        g = torch.full((N, D), float(k + 1))
        p.grad, ref.grad = g, g.clone()
        opt.step()
        dense.step()
    torch.testing.assert_close(p, ref)


def test_state_saves_and_loads_with_weights_only(tmp_path):
    init = torch.randn(N, D, generator=torch.Generator().manual_seed(4))
    grads = _grads(12, seed=5, rows_per_step=5)
    full_p = torch.nn.Parameter(init.clone())
    full = LazyAdam([full_p], lr=0.02)
    for rows, values in grads:
        full_p.grad = _sparse_grad(rows, values)
        full.step()
    part_p = torch.nn.Parameter(init.clone())
    part = LazyAdam([part_p], lr=0.02)
    for rows, values in grads[:6]:
        part_p.grad = _sparse_grad(rows, values)
        part.step()
    torch.save({"opt": part.state_dict(), "p": part_p.detach()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed_p = torch.nn.Parameter(saved["p"].clone())
    resumed = LazyAdam([resumed_p], lr=0.02)
    resumed.load_state_dict(saved["opt"])
    assert resumed.state[resumed_p]["step"].dtype == torch.int64
    for rows, values in grads[6:]:
        resumed_p.grad = _sparse_grad(rows, values)
        resumed.step()
    assert torch.equal(resumed_p, full_p)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="LazyAdam"):
        LazyAdam([torch.nn.Parameter(torch.zeros(2, 2))], lr=0.0)


# --- optim.optimizer=lazy_adam in training ------------------------------------------------


def lazy_cfg(**over):
    optim = {"epochs": 4, "batch_size": 256, "lr": 0.01, "optimizer": "lazy_adam"}
    return small_cfg(optim=optim).updated(over)


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


def test_lazy_adam_is_opt_in_and_splits_tables_and_heads(ds):
    assert load_config().optim.optimizer == "adam"
    assert type(make_optimizer(small_cfg(), build_model(small_cfg(), ds))) is torch.optim.Adam
    model = build_model(lazy_cfg(), ds)
    assert model.encoder.user_embedding.sparse and model.encoder.item_embedding.sparse
    opt = make_optimizer(lazy_cfg(), model)
    assert isinstance(opt, LazyDenseAdam) and isinstance(opt.sparse, LazyAdam)
    tables = {id(model.encoder.user_embedding.weight), id(model.encoder.item_embedding.weight)}
    assert {id(p) for g in opt.sparse.param_groups for p in g["params"]} == tables
    dense_ids = {id(p) for g in opt.dense.param_groups for p in g["params"]}
    assert dense_ids == {id(p) for p in model.parameters()} - tables and dense_ids


def test_lazy_training_is_deterministic_resumes_exactly_and_differs_from_dense(ds, tmp_path):
    cfg = lazy_cfg(method={"name": "pmtrec", "params": {}})
    full = train(cfg, tmp_path / "full", dataset=ds)
    again = train(cfg, tmp_path / "again", dataset=ds)
    assert full.finished and full.metrics["test"] == again.metrics["test"]
    part = train(cfg, tmp_path / "part", dataset=ds, max_epochs_this_call=2)
    assert part.status["state"] == "paused"
    ckpt = load_checkpoint(tmp_path / "part" / "last.pt")  # weights_only=True
    assert set(ckpt["optimizer"]) == {"lazy", "dense"}
    assert all(s["step"].dtype == torch.int64 for s in ckpt["optimizer"]["lazy"]["state"].values())
    resumed = train(cfg, tmp_path / "part", dataset=ds)
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.history["loss/rec"].tolist() == full.history["loss/rec"].tolist()
    dense = train(small_cfg(optim={"epochs": 4, "batch_size": 256, "lr": 0.01}), tmp_path / "d", dataset=ds)
    assert dense.history["loss/rec"].tolist() != full.history["loss/rec"].tolist()


def test_a_dense_checkpoint_is_refused_by_a_lazy_run(ds):
    model = build_model(lazy_cfg(), ds)
    opt = make_optimizer(lazy_cfg(), model)
    with pytest.raises(ValueError, match="lazy_adam"):
        opt.load_state_dict({"sparse": {}, "dense": None})


@pytest.mark.parametrize("encoder", ["lightgcn", "hetero"])
def test_lazy_adam_with_a_graph_encoder_is_refused(encoder):
    with pytest.raises(ConfigError, match=r"lazy_adam.*encoder\.name=mf"):
        load_config(overrides=["optim.optimizer=lazy_adam", f"encoder.name={encoder}"])


def test_lazy_adam_and_sparse_adam_together_are_refused():
    with pytest.raises(ConfigError, match="choose one"):
        load_config(overrides=["optim.optimizer=lazy_adam", "optim.sparse=true"])
    with pytest.raises(ConfigError, match="optim.optimizer"):
        load_config(overrides=["optim.optimizer=sgd"])
    cfg = load_config(overrides=["optim.optimizer=lazy_adam", "optim.weight_decay=1e-4"])
    assert "optimizer: lazy_adam" in cfg.to_yaml()
