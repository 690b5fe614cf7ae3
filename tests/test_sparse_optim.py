"""``optim.sparse``: MF tables with sparse gradients, SparseAdam on them and Adam on the task heads.

Training runs, is deterministic, resumes exactly, leaves the rows a step does not look up
untouched (lazy Adam) and refuses the graph encoders and weight decay."""

from __future__ import annotations

import pytest
import torch
import yaml

from pmtrec_lab.config import load_config
from pmtrec_lab.encoders import build_encoder
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.mtl import StepContext, make_method
from pmtrec_lab.train import build_model, train
from pmtrec_lab.train.optim import SparseDenseAdam, make_optimizer
from pmtrec_lab.train.run import load_checkpoint
from pmtrec_lab.train.step import layout_step, train_step
from tests.helpers import tiny_synthetic
from tests.test_training import small_cfg

CPU = torch.device("cpu")


def sparse_cfg(**over):
    return small_cfg(optim={"epochs": 4, "batch_size": 256, "lr": 0.01, "sparse": True}).updated(over)


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


def _epoch(model, seed: int = 0):
    tasks = list(model.tasks)
    gen = torch.Generator().manual_seed(seed)
    steps = tasks[0].steps_for_epoch()
    for t in tasks:
        t.start_epoch(steps, gen)
    return tasks, gen, steps


def _step(model, optimizer, tasks, batches, i: int, steps: int):
    ctx = StepContext(i, 0, steps, [t.name for t in tasks], torch.Generator().manual_seed(i))
    optimizer.zero_grad(set_to_none=True)
    res = train_step(model.encoder, tasks, batches, make_method("ew", len(tasks)), ctx, 1e-2, CPU)
    optimizer.step()
    return res


def test_sparse_tables_start_as_the_dense_ones_and_give_the_same_gradients(ds):
    dense, sparse = build_model(small_cfg(), ds), build_model(sparse_cfg(), ds)
    for (name, a), b in zip(dense.state_dict().items(), sparse.state_dict().values()):
        assert torch.equal(a, b), name
    tasks_d, gen_d, steps = _epoch(dense)
    tasks_s, gen_s, _ = _epoch(sparse)
    batches_d = [t.next_batch(gen_d) for t in tasks_d]
    batches_s = [t.next_batch(gen_s) for t in tasks_s]
    for model, tasks, batches in ((dense, tasks_d, batches_d), (sparse, tasks_s, batches_s)):
        ctx = StepContext(0, 0, steps, [t.name for t in tasks], torch.Generator().manual_seed(0))
        train_step(model.encoder, tasks, batches, make_method("ew", len(tasks)), ctx, 1e-2, CPU)
    lay = layout_step(batches_s, CPU)
    for table, rows in (("user_embedding", lay.users), ("item_embedding", lay.items)):
        gs = getattr(sparse.encoder, table).weight.grad
        gd = getattr(dense.encoder, table).weight.grad
        assert gs.is_sparse and not gd.is_sparse
        # the combined backward and the L2 term both land in the sparse gradient, on the step's rows
        touched = gs.coalesce().indices()[0].unique()
        assert set(touched.tolist()) <= set(rows.tolist())
        torch.testing.assert_close(gs.to_dense(), gd, rtol=1e-6, atol=1e-9)
    for (name, pd_), ps in zip(dense.tasks.named_parameters(), sparse.tasks.parameters()):
        if pd_.grad is not None:
            assert not ps.grad.is_sparse
            torch.testing.assert_close(ps.grad, pd_.grad, msg=name)


def test_the_optimizer_splits_tables_and_heads(ds):
    model = build_model(sparse_cfg(), ds)
    opt = make_optimizer(sparse_cfg(), model)
    assert isinstance(opt, SparseDenseAdam)
    emb = {id(model.encoder.user_embedding.weight), id(model.encoder.item_embedding.weight)}
    assert {id(p) for g in opt.sparse.param_groups for p in g["params"]} == emb
    dense_ids = {id(p) for g in opt.dense.param_groups for p in g["params"]}
    assert dense_ids == {id(p) for p in model.parameters()} - emb and dense_ids
    # the default stays the plain Adam over every parameter
    assert type(make_optimizer(small_cfg(), build_model(small_cfg(), ds))) is torch.optim.Adam


def test_rows_outside_the_step_keep_their_values(ds):
    """Lazy Adam: a row not looked up by a step does not move, even with momentum from an earlier
    step; dense Adam moves it (the contrast that makes the check meaningful)."""
    moved_dense = None
    small_batches = {"optim": {"batch_size": 8}}  # so that each step looks up a few rows only
    for cfg in (sparse_cfg(**small_batches), small_cfg(**small_batches)):
        model = build_model(cfg, ds)
        opt = make_optimizer(cfg, model)
        tasks, gen, steps = _epoch(model)
        first = [t.next_batch(gen) for t in tasks]
        _step(model, opt, tasks, first, 0, steps)
        before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        second = [t.next_batch(gen) for t in tasks]
        _step(model, opt, tasks, second, 1, steps)
        lay1, lay2 = layout_step(first, CPU), layout_step(second, CPU)
        stale = 0
        for table, r1, r2 in (
            ("user_embedding.weight", lay1.users, lay2.users),
            ("item_embedding.weight", lay1.items, lay2.items),
        ):
            after = model.encoder.state_dict()[table]
            in2 = torch.zeros(after.shape[0], dtype=torch.bool)
            in2[r2] = True
            changed = (after != before[table]).any(1)
            only1 = torch.zeros_like(in2)
            only1[r1] = True
            only1 &= ~in2
            assert int(only1.sum()) > 0  # rows with momentum from step 1 and no gradient in step 2
            if cfg.optim.sparse:
                assert not bool(changed[~in2].any()), f"{table}: rows outside the step moved"
                assert bool(changed[in2].all()), f"{table}: a row of the step did not move"
            else:
                stale += int(changed[only1].sum())
        if not cfg.optim.sparse:
            moved_dense = stale
    assert moved_dense and moved_dense > 0


def test_sparse_training_is_deterministic_and_differs_from_dense(ds, tmp_path):
    a = train(sparse_cfg(), tmp_path / "a", dataset=ds)
    b = train(sparse_cfg(), tmp_path / "b", dataset=ds)
    assert a.finished and a.metrics["test"] == b.metrics["test"]
    assert a.history["loss/rec"].tolist() == b.history["loss/rec"].tolist()
    ma = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    mb = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    dense = train(small_cfg(), tmp_path / "dense", dataset=ds)
    assert dense.history["loss/rec"].tolist() != a.history["loss/rec"].tolist()
    c = train(sparse_cfg(seed=1), tmp_path / "c", dataset=ds)
    assert c.metrics["test"] != a.metrics["test"]


@pytest.mark.parametrize("method", ["ew", "pmtrec"])
def test_sparse_resume_gives_the_uninterrupted_result(ds, tmp_path, method):
    cfg = sparse_cfg(method={"name": method, "params": {}})
    full = train(cfg, tmp_path / "full", dataset=ds)
    part = train(cfg, tmp_path / "part", dataset=ds, max_epochs_this_call=2)
    assert part.status["state"] == "paused" and len(part.history) == 2
    ckpt = load_checkpoint(tmp_path / "part" / "last.pt")
    opt_state = ckpt["optimizer"]
    assert set(opt_state) == {"sparse", "dense"}
    assert len(opt_state["sparse"]["state"]) == 2 and opt_state["dense"]["state"]
    assert all("exp_avg" in s for s in opt_state["sparse"]["state"].values())
    resumed = train(cfg, tmp_path / "part", dataset=ds)
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.history["valid/ndcg@20"].tolist() == full.history["valid/ndcg@20"].tolist()
    assert resumed.history["loss/rec"].tolist() == full.history["loss/rec"].tolist()
    sf = load_checkpoint(tmp_path / "full" / "last.pt")
    sr = load_checkpoint(tmp_path / "part" / "last.pt")
    assert all(torch.equal(sf["model"][k], sr["model"][k]) for k in sf["model"])
    for part_name in ("sparse", "dense"):
        for pid, st in sf["optimizer"][part_name]["state"].items():
            for key, value in st.items():
                other = sr["optimizer"][part_name]["state"][pid][key]
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (part_name, key)


@pytest.mark.parametrize("encoder", ["lightgcn", "hetero"])
def test_sparse_with_a_graph_encoder_is_refused(encoder):
    with pytest.raises(ConfigError, match=r"optim\.sparse.*encoder\.name=mf"):
        load_config(overrides=["optim.sparse=true", f"encoder.name={encoder}"])


def test_sparse_with_weight_decay_is_refused(ds):
    with pytest.raises(ConfigError, match=r"optim\.sparse.*weight_decay"):
        load_config(overrides=["optim.sparse=true", "optim.weight_decay=1e-4"])
    with pytest.raises(ValueError, match=r"optim\.sparse.*mf"):
        build_encoder("lightgcn", ds, 8, 1, sparse=True)


def test_sparse_round_trips_and_old_run_configs_still_resume(tmp_path):
    assert "sparse: false" in load_config().to_yaml()
    # a run directory written before the key existed is still the same configuration
    old = load_config().to_dict()
    del old["optim"]["sparse"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_config(tmp_path / "config.yaml").to_yaml() == load_config().to_yaml()
    cfg = load_config(overrides=["optim.sparse=true"])
    assert "sparse: true" in cfg.to_yaml() and load_config(base=cfg.to_dict()).optim.sparse
