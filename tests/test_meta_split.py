"""PMTRec v3's meta split (docs/pmtrec-method.md, "Meta split") and the meta loss's gradients:
one training pair per user with at least 5 held out of training, disjoint from validation and
test (which stay exactly as they are), masked at evaluation, never a negative, in the cache key
and ``datasets info``; the gradient rows ``train_step`` hands a ``needs_meta`` method, against a
loop reference."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pmtrec_lab.cli import main as cli_main
from pmtrec_lab.config import load_config
from pmtrec_lab.data import load_dataset
from pmtrec_lab.data.loading import build_rec_dataset
from pmtrec_lab.data.sources.synthetic import load_raw as synthetic_raw
from pmtrec_lab.data.split import MIN_TRAIN_FOR_META, hold_out_meta, split_per_user
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.mtl import StepContext, make_method
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.tasks import build_tasks
from pmtrec_lab.tasks.meta import MetaBatch, MetaPairs
from pmtrec_lab.train import train
from pmtrec_lab.train.run import load_checkpoint
from pmtrec_lab.train.step import layout_step, meta_gradients, train_step
from pmtrec_lab.train.trainer import Model, evaluate_split
from tests.helpers import FixedEncoder, assert_pairs_disjoint

SYN = {"num_users": 150, "num_items": 90, "interactions_per_user": 12}


def _pairs(n_per_user: list[int], num_items: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [(u, int(i)) for u, n in enumerate(n_per_user) for i in rng.choice(num_items, n, replace=False)]
    return np.asarray(rows, dtype=np.int64)


def _keys(a: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, a.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_one_meta_pair_per_user_with_five_training_pairs(seed: int) -> None:
    counts = [2, 3, 4, 5, 6, 7, 8, 12, 20, 30]  # training sizes 2, 3, 4, 5, 6, 7, 8, 10, 16, 24
    pairs = _pairs(counts)
    plain = split_per_user(pairs, len(counts), seed)
    held = hold_out_meta(plain, len(counts))
    train_counts = np.bincount(plain.train[:, 0], minlength=len(counts))
    meta_users = held.meta[:, 0]
    assert sorted(meta_users.tolist()) == np.flatnonzero(train_counts >= MIN_TRAIN_FOR_META).tolist()
    assert len(set(meta_users.tolist())) == len(meta_users)  # one per user
    # validation and test exactly as without the meta split; train + meta = the plain train
    assert np.array_equal(held.valid, plain.valid) and np.array_equal(held.test, plain.test)
    assert _keys(held.train) | _keys(held.meta) == _keys(plain.train)
    assert_pairs_disjoint(held.train, held.meta)
    assert_pairs_disjoint(held.meta, held.valid)
    assert_pairs_disjoint(held.meta, held.test)
    again = hold_out_meta(split_per_user(pairs, len(counts), seed), len(counts))
    assert np.array_equal(again.meta, held.meta)  # seeded by split_seed
    assert held.sizes()["meta"] == len(held.meta) and "meta" not in plain.sizes()


def test_meta_draw_depends_on_the_split_seed() -> None:
    pairs = _pairs([30] * 40, num_items=60)
    a = hold_out_meta(split_per_user(pairs, 40, 0), 40)
    b = hold_out_meta(split_per_user(pairs, 40, 1), 40)
    assert not np.array_equal(a.meta, b.meta)


def test_meta_split_enters_the_cache_key_and_round_trips(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))
    plain = load_dataset("synthetic", loader_args=SYN)
    built = load_dataset("synthetic", loader_args=SYN, meta_split=True)
    cached = load_dataset("synthetic", loader_args=SYN, meta_split=True)
    assert built.fingerprint != plain.fingerprint and cached.fingerprint == built.fingerprint
    assert np.array_equal(cached.split.meta, built.split.meta) and len(built.split.meta) > 0
    assert "meta_split" not in plain.params  # datasets without it keep their fingerprints
    assert len(plain.split.meta) == 0
    assert len(plain.split.train) == len(built.split.train) + len(built.split.meta)


def test_datasets_info_shows_the_meta_split(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))
    args = ["datasets", "info", "synthetic", "--json", "--set", f"loader_args={json.dumps(SYN)}"]
    assert cli_main([*args, "--set", "meta_split=true"]) == 0
    on = json.loads(capsys.readouterr().out)["split"]
    assert cli_main(args) == 0
    off = json.loads(capsys.readouterr().out)["split"]
    assert "meta" not in off and on["meta"] > 0
    assert on["train"] + on["meta"] == off["train"] and on["valid"] == off["valid"]



def test_evaluation_masks_the_meta_pairs() -> None:
    raw = synthetic_raw(None, **SYN, seed=0)
    ds = build_rec_dataset(raw, k=2, rating_threshold=None, split_seed=0, meta_split=True)
    cfg = load_config(overrides=["data.name=synthetic", "eval.ks=[1]", "eval.metric=hit@1"])
    n_u, n_i = ds.num_users, ds.num_items
    # one-hot scores: each meta user's meta item scores 2, its first validation item 1, others 0
    users = torch.eye(n_u)
    items = torch.zeros(n_i, n_u)
    items[ds.split.meta[:, 1], ds.split.meta[:, 0]] = 2.0
    meta_users = set(ds.split.meta[:, 0].tolist())
    valid = ds.split.valid[np.isin(ds.split.valid[:, 0], list(meta_users))]
    first = valid[np.unique(valid[:, 0], return_index=True)[1]]
    clash = np.isin(first[:, 1], ds.split.meta[:, 1])  # an item that is another user's meta item
    first = first[~clash]
    items[first[:, 1], first[:, 0]] = 1.0
    model = Model(FixedEncoder(users, items), [])
    masked = evaluate_split(model, ds, cfg, "valid", torch.device("cpu"))
    unmasked_ds = replace(ds, split=replace(ds.split, meta=np.zeros((0, 2), dtype=np.int64)))
    unmasked = evaluate_split(model, unmasked_ds, cfg, "valid", torch.device("cpu"))
    planted = np.isin(masked.users, first[:, 0])
    assert planted.sum() > 20
    assert (masked.per_user["hit@1"][planted] == 1).all()  # meta item masked: the valid item first
    assert (unmasked.per_user["hit@1"][planted] == 0).all()  # else the meta item takes rank 1


def test_meta_pairs_are_never_negatives() -> None:
    raw = synthetic_raw(None, **SYN, seed=0)
    ds = build_rec_dataset(raw, k=2, rating_threshold=None, split_seed=0, meta_split=True)
    cfg = load_config(overrides=["data.name=synthetic"])
    rec = build_tasks(cfg, ds, 8)[0]
    meta = torch.as_tensor(ds.split.meta)
    assert bool(rec.observed.contains(meta[:, 0], meta[:, 1]).all())
    pairs = MetaPairs(ds.split.meta, ds.num_users, ds.num_items, rec.observed)
    batch = pairs.batch(torch.arange(ds.num_users), torch.Generator().manual_seed(0))
    assert len(batch) == len(ds.split.meta)
    assert not bool(rec.observed.contains(batch.users, batch.neg).any())
    assert np.array_equal(
        np.stack([batch.users, batch.pos], 1), ds.split.meta[np.argsort(ds.split.meta[:, 0])]
    )


def test_meta_gradients_match_a_loop_reference() -> None:
    torch.manual_seed(0)
    d, n_u, n_i = 5, 12, 15
    zu_all, zi_all_tab = torch.randn(n_u, d), torch.randn(n_i, d)
    from pmtrec_lab.tasks.base import TaskBatch

    step_users = torch.tensor([0, 2, 3, 5, 8, 9])
    step_items = torch.tensor([1, 4, 6, 7, 11])
    batch = TaskBatch(
        {"anchor": step_users, "pos": step_items[:3].repeat(2), "neg": step_items[[3, 4, 0, 1, 2, 3]]},
        user_roles=("anchor",),
        item_roles=("pos", "neg"),
    )
    layout = layout_step([batch], torch.device("cpu"))
    meta = MetaBatch(
        users=torch.tensor([2, 5, 9]), pos=torch.tensor([4, 13, 6]), neg=torch.tensor([11, 14, 4])
    )
    items = torch.unique(torch.cat([layout.items, meta.pos, meta.neg]))
    g, touched = meta_gradients(zu_all[layout.users], zi_all_tab[items], items, layout, meta)
    ref = torch.zeros(layout.users.numel() + layout.items.numel(), d)
    for u, p, q in zip(meta.users.tolist(), meta.pos.tolist(), meta.neg.tolist()):
        x = zu_all[u] @ (zi_all_tab[p] - zi_all_tab[q])
        c = -(1 - torch.sigmoid(x)) / len(meta)  # d/dx of -logsigmoid(x), averaged
        ru = (layout.users == u).nonzero().item()
        ref[ru] += c * (zi_all_tab[p] - zi_all_tab[q])
        for item, sign in ((p, 1.0), (q, -1.0)):
            hit = (layout.items == item).nonzero()
            if hit.numel():  # meta items outside the step have no row
                ref[layout.num_users + hit.item()] += sign * c * zu_all[u]
    assert torch.allclose(g, ref, atol=1e-6)
    expect = [u in (2, 5, 9) for u in layout.users.tolist()] + [
        i in (4, 6, 11) for i in layout.items.tolist()
    ]
    assert touched.tolist() == expect


def test_train_step_hands_meta_gradients_to_the_method_and_applies_none() -> None:
    raw = synthetic_raw(None, **SYN, seed=0)
    ds = build_rec_dataset(raw, k=2, rating_threshold=None, split_seed=0, meta_split=True)
    cfg = load_config(overrides=["data.name=synthetic", "encoder.dim=8"])
    from pmtrec_lab.train.trainer import build_model

    model = build_model(cfg, ds)
    tasks = list(model.tasks)
    gen = torch.Generator().manual_seed(0)
    for t in tasks:
        t.start_epoch(1, gen)
    batches = [t.next_batch(gen) for t in tasks]
    ctx = StepContext(step=0, epoch=0, steps_per_epoch=1, task_names=[t.name for t in tasks], generator=gen)
    seen = {}

    class Spy(type(make_method("ew", len(tasks)))):
        def combine(self, grads, active, side, losses, ctx):
            seen["meta"] = (ctx.meta_grads, ctx.meta_active)
            return super().combine(grads, active, side, losses, ctx)

    spy = Spy(len(tasks))
    grads_after = []
    for meta in (None, MetaPairs(ds.split.meta, ds.num_users, ds.num_items, tasks[0].observed)):
        model.zero_grad(set_to_none=True)
        mb = None if meta is None else meta.for_batches(batches, torch.Generator().manual_seed(1))
        train_step(model.encoder, tasks, batches, spy, ctx, 1e-4, torch.device("cpu"), meta=mb)
        grads_after.append([p.grad.clone() if p.grad is not None else None for p in model.parameters()])
        if meta is None:
            assert seen["meta"] == (None, None)
    g, active = seen["meta"]
    assert g is not None and g.shape[0] == active.shape[0] and bool(active.any())
    assert float(g[active].norm()) > 0 and float(g[~active].abs().max()) == 0.0
    for a, b in zip(*grads_after):  # the meta loss changes no parameter's gradient
        assert (a is None and b is None) or torch.equal(a, b)


def _run(tmp_path, name, meta_split, **params):
    cfg = notebook_config(
        dataset="synthetic",
        loader_args=SYN,
        k_core=2,
        dim=8,
        epochs=2,
        lr=0.01,
        method="pmtrec",
        method_params=params,
        batch_size=512,
    )
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"meta_split": meta_split})})
    return train(cfg, tmp_path / name)


def test_usefulness_without_a_meta_split_is_refused_naming_the_setting(tmp_path) -> None:
    with pytest.raises(ConfigError, match="data.meta_split=true"):
        _run(tmp_path, "no-meta", False, usefulness="meta_cos")


def test_usefulness_trains_deterministically_and_moves_its_scales(tmp_path) -> None:
    a = _run(tmp_path, "a", True, usefulness="meta_cos", usefulness_lr=0.05)
    b = _run(tmp_path, "b", True, usefulness="meta_cos", usefulness_lr=0.05)
    assert a.metrics["test"] == b.metrics["test"]
    lam = load_checkpoint(tmp_path / "a" / "last.pt")["method"]["usefulness_scale"]
    assert torch.all(lam[:, 0] == 1.0) and not torch.allclose(lam[:, 1:], torch.ones_like(lam[:, 1:]))


def test_meta_signals_reach_the_diagnostics_tables(tmp_path) -> None:
    """lambda trajectories, meta cosines and delta distributions per epoch (notebooks 02 and 03)."""
    from pmtrec_lab.train.run import load_diagnostics

    _run(tmp_path, "d", True, usefulness="meta_cos", usefulness_lr=0.05, delta="learned", rho=0.0)
    epochs = load_diagnostics(tmp_path / "d")["epochs"]
    for metric in ("usefulness_scale", "meta_cos", "delta_mean", "delta_abs"):
        rows = epochs[(epochs.metric == metric) & (epochs.task != "rec")]
        assert set(rows.epoch) == {1, 2}, metric
        assert set(rows.side) <= {"user", "item"} and len(rows) > 0, metric
    lam = epochs[epochs.metric == "usefulness_scale"]
    assert (lam[lam.task == "rec"].value == 1.0).all() and lam.value.between(0, 2).all()
    assert (epochs[epochs.metric == "delta_abs"].value > 0).any()
    assert epochs[epochs.metric == "meta_cos"].value.between(-1, 1).all()
    # the notebooks' figures of these signals: a line per (task, side), placeholders name the setting
    from pmtrec_lab import viz

    for metric in ("usefulness_scale", "meta_cos", "delta_abs", "count_spearman", "focus_share"):
        fig = viz.v3_signal(epochs, metric)
        rows = epochs[epochs.metric == metric]
        assert not viz.is_missing(fig), metric
        assert len(fig.data) == rows.groupby(["task", "side"]).ngroups, metric
        assert sorted(float(v) for t in fig.data for v in t.y) == sorted(rows.value.astype(float)), metric
    absent = viz.v3_signal(epochs, "gmb_reduce")
    assert viz.is_missing(absent) and "gmb_mode=entity_reduce" in viz.missing_reason(absent)
    with pytest.raises(ValueError, match="unknown metric"):
        viz.v3_signal(epochs, "nope")


# --------------------------------------------------------------- candidate (c): meta_spsa


def _drive(spsa, effect, cycles, trend=0.0, seed=0):
    """Feed ``spsa`` window boundaries where a window's meta-loss change is ``trend`` plus
    ``effect`` . (applied scales): a task's pressure, hence its effect, is proportional to its
    scale (helpful effects lower the loss, harmful ones raise it)."""
    from pmtrec_lab.mtl._meta_spsa import PATTERN

    gen = torch.Generator().manual_seed(seed)
    value = 1.0
    spsa.observe(value, gen)
    thetas = []
    for w in range(cycles * len(PATTERN)):
        value += trend + float((effect * spsa.applied()).sum())
        spsa.observe(value, gen)
        if w % len(PATTERN) == len(PATTERN) - 1:
            thetas.append(spsa.theta.clone())
    return torch.stack(thetas)


def test_spsa_cycle_matches_the_formula_and_cancels_a_linear_trend():
    from pmtrec_lab.mtl._meta_spsa import PATTERN, MetaLossSPSA

    spsa = MetaLossSPSA(2, 3, eps=0.3, lr=0.2, lambda_max=2.0)
    spsa.mark_touched(torch.ones(2, 3, dtype=torch.bool))
    gen = torch.Generator().manual_seed(0)
    spsa.observe(5.0, gen)
    signs = spsa.signs.clone()
    assert (signs[:, 0] == 0).all() and set(signs[:, 1:].flatten().tolist()) <= {-1.0, 1.0}
    deltas = [-0.3, -0.1, -0.2, -0.35]
    value = 5.0
    for w, d in enumerate(deltas):
        expect = torch.exp(0.3 * PATTERN[w] * signs)
        torch.testing.assert_close(spsa.applied(), expect)
        value += d
        spsa.observe(value, gen)
    d = -0.3 + 0.1 + 0.2 - 0.35
    r = d / (abs(d) + abs(-0.3 + 0.35) + abs(-0.1 + 0.2))
    torch.testing.assert_close(spsa.theta, (-0.2 * r * signs).clamp(np.log(1e-3), np.log(2.0)))
    assert spsa.updates == 1 and spsa.window == 0
    flat = MetaLossSPSA(2, 3, eps=0.3, lr=0.2, lambda_max=2.0)
    flat.mark_touched(torch.ones(2, 3, dtype=torch.bool))
    _drive(flat, torch.zeros(2, 3, dtype=torch.float64), cycles=5, trend=-0.01)
    assert torch.equal(flat.theta, torch.zeros(2, 3, dtype=torch.float64))  # a trend alone: no move


def test_spsa_lowers_a_harmful_task_and_raises_a_helpful_one():
    from pmtrec_lab.mtl._meta_spsa import FLOOR, MetaLossSPSA

    # as on real data, each auxiliary task touches one side: task 1 users (helpful), task 2
    # items (harmful), task 3 both (neutral on users, harmful on items)
    effect = torch.tensor([[0.0, -0.02, 0.0, 0.0], [0.0, 0.0, 0.05, 0.03]], dtype=torch.float64)
    touched = torch.tensor([[True, True, False, True], [True, False, True, True]])
    for seed in range(3):
        spsa = MetaLossSPSA(2, 4, eps=0.3, lr=0.3, lambda_max=2.0)
        spsa.mark_touched(touched)
        late = _drive(spsa, effect, cycles=120, trend=-0.001, seed=seed)[40:]  # theta per cycle
        assert (late[:, :, 0] == 0).all()  # the main task's scale stays 1
        assert (late[:, 1, 1] == 0).all() and (late[:, 0, 2] == 0).all()  # untouched: not moved
        # SPSA moves every scale at once, so each walks with a drift: judged on average
        assert late[:, 0, 1].mean() > np.log(1.5)  # helpful: mostly at the upper bound
        # harmful: well below 1 (a small scale also shrinks the effect it can show, so the
        # walk slows on the way down rather than pinning the floor)
        assert late[:, 1, 2].mean() < np.log(0.6) and late[:, 1, 3].mean() < np.log(0.6)
    assert FLOOR == 1e-3


def test_spsa_state_round_trips_mid_cycle():
    from pmtrec_lab.mtl._meta_spsa import MetaLossSPSA

    effect = torch.tensor([[0.0, -0.02, 0.05], [0.0, 0.01, -0.03]], dtype=torch.float64)
    a = MetaLossSPSA(2, 3, eps=0.3, lr=0.3, lambda_max=2.0)
    a.mark_touched(torch.ones(2, 3, dtype=torch.bool))
    gen = torch.Generator().manual_seed(3)
    value = 1.0
    for _ in range(7):  # stops inside the second cycle
        a.observe(value, gen)
        value += float((effect * a.applied().log()).sum())
    b = MetaLossSPSA(2, 3, eps=0.3, lr=0.3, lambda_max=2.0)
    b.load_state_dict(a.state_dict())
    for spsa in (a, b):
        g = torch.Generator().manual_seed(9)
        v = value
        for _ in range(9):
            spsa.observe(v, g)
            v += float((effect * spsa.applied().log()).sum())
    torch.testing.assert_close(a.theta, b.theta)
    assert a.updates == b.updates >= 3


def test_meta_spsa_trains_end_to_end_with_a_meta_loss_per_window(tmp_path, monkeypatch) -> None:
    from pmtrec_lab.mtl.pmtrec import PMTRec
    from pmtrec_lab.train import trainer as trainer_module

    seen: list[tuple[int, float]] = []
    original = PMTRec.observe_meta_loss

    def spy(self, value, ctx):
        seen.append((ctx.step, value))
        original(self, value, ctx)

    monkeypatch.setattr(PMTRec, "observe_meta_loss", spy)
    computed: list[float] = []
    real = trainer_module.meta_loss_on

    def on(model, batch):
        computed.append(real(model, batch))
        users, items = (t.detach() for t in model.encoder())  # the loop reference, pair by pair
        ref = np.mean(
            [
                -float(torch.nn.functional.logsigmoid(users[u] @ items[p] - users[u] @ items[q]))
                for u, p, q in zip(batch.users.tolist(), batch.pos.tolist(), batch.neg.tolist())
            ]
        )
        assert computed[-1] == pytest.approx(ref, rel=1e-5)
        return computed[-1]

    monkeypatch.setattr(trainer_module, "meta_loss_on", on)
    a = _run(tmp_path, "spsa", True, usefulness="meta_spsa", spsa_every=1)
    steps = [s for s, _ in seen]
    assert steps == list(range(len(steps))) and len(steps) >= 4  # every window's start
    assert [v for _, v in seen] == computed
    b = _run(tmp_path, "spsa-again", True, usefulness="meta_spsa", spsa_every=1)
    assert a.metrics["test"] == b.metrics["test"]
    with pytest.raises(ConfigError, match="data.meta_split=true"):
        _run(tmp_path, "spsa-no-meta", False, usefulness="meta_spsa")
