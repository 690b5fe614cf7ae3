"""Training core: per-entity task gradients, the EW equivalence, determinism, resume, NaN handling,
configuration, and the CLI on a small generated dataset."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from pmtrec_lab.config import RunConfig, load_config
from pmtrec_lab.errors import ConfigError, TrainingDivergedError
from pmtrec_lab.mtl import CombineResult, MethodParams, StepContext, make_method
from pmtrec_lab.mtl.base import METHODS, WeightingMethod, register
from pmtrec_lab.train import build_model, load_run, train
from pmtrec_lab.train.run import load_checkpoint
from pmtrec_lab.train.step import check_finite, layout_step, plain_ew_step, task_gradients, train_step
from tests.helpers import tiny_synthetic

SYN = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}


def small_cfg(**over) -> RunConfig:
    base = {
        "data": {"name": "synthetic", "loader_args": SYN, "k_core": 2},
        "tasks": {"include": ["social:friends", "item_label:category", "user_label:community"]},
        "encoder": {"name": "mf", "dim": 16},
        "optim": {"epochs": 4, "batch_size": 256, "lr": 0.01},
        "eval": {"ks": [10, 20], "patience": 10},
        "progress": "none",
    }
    cfg = load_config(base=base)
    return cfg.updated(over)


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


def _batches(model, gen):
    tasks = list(model.tasks)
    steps = tasks[0].steps_for_epoch()
    for t in tasks:
        t.start_epoch(steps, gen)
    return tasks, [t.next_batch(gen) for t in tasks]


def test_per_entity_gradients_equal_k_separate_backward_passes(ds):
    model = build_model(small_cfg(), ds)
    tasks, batches = _batches(model, torch.Generator().manual_seed(0))
    lay = layout_step(batches, torch.device("cpu"))
    zu, zi = model.encoder.encode(lay.users, lay.items)
    losses, grads, _ = task_gradients(zu, zi, tasks, batches, lay)
    emb_u, emb_i = model.encoder.user_embedding.weight, model.encoder.item_embedding.weight
    for k, (task, batch) in enumerate(zip(tasks, batches)):
        model.zero_grad(set_to_none=True)
        zu2, zi2 = model.encoder.encode(lay.users, lay.items)
        task.loss(zu2, zi2, lay.local[k], batch).backward()
        gu = emb_u.grad[lay.users] if emb_u.grad is not None else torch.zeros_like(zu2)
        gi = emb_i.grad[lay.items] if emb_i.grad is not None else torch.zeros_like(zi2)
        expected = torch.cat([gu, gi])
        torch.testing.assert_close(grads[k], expected, rtol=1e-5, atol=1e-9)
        # the active mask marks exactly the rows with a gradient from this task
        assert bool((grads[k].abs().sum(1) > 0).le(lay.active[:, k]).all())
    assert losses.shape == (len(tasks),)


def test_ew_combination_reproduces_the_plain_summed_backward(ds):
    cfg = small_cfg()
    model_a = build_model(cfg, ds)
    model_b = build_model(cfg, ds)
    model_b.load_state_dict(model_a.state_dict())
    ta, ba = _batches(model_a, torch.Generator().manual_seed(1))
    tb, bb = _batches(model_b, torch.Generator().manual_seed(1))
    ctx = StepContext(0, 0, 1, [t.name for t in ta], torch.Generator().manual_seed(0))
    train_step(model_a.encoder, ta, ba, make_method("ew", len(ta)), ctx, 1e-4, torch.device("cpu"))
    plain_ew_step(model_b.encoder, tb, bb, 1e-4, torch.device("cpu"))
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        assert (pa.grad is None) == (pb.grad is None), name
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-8, msg=name)


def test_same_seed_same_metrics_and_different_seed_differs(ds, tmp_path):
    a = train(small_cfg(), tmp_path / "a", dataset=ds)
    b = train(small_cfg(), tmp_path / "b", dataset=ds)
    c = train(small_cfg(seed=1), tmp_path / "c", dataset=ds)
    assert a.metrics["test"] == b.metrics["test"]
    assert a.metrics["test"] != c.metrics["test"]
    assert a.metrics["best_epoch"] >= 1 and a.finished
    assert set(a.metrics["test"]) >= {"recall@10", "ndcg@20", "precision@10", "hit@20", "mrr@10"}


@pytest.mark.parametrize("method", ["ew", "pmtrec"])
def test_resume_gives_the_uninterrupted_result(ds, tmp_path, method):
    cfg = small_cfg(method={"name": method, "params": {}})
    full = train(cfg, tmp_path / "full", dataset=ds)
    part = train(cfg, tmp_path / "part", dataset=ds, max_epochs_this_call=2)
    assert part.status["state"] == "paused" and len(part.history) == 2
    resumed = train(cfg, tmp_path / "part", dataset=ds)
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.history["valid/ndcg@20"].tolist() == full.history["valid/ndcg@20"].tolist()
    # a finished run is returned, not redone
    again = train(cfg, tmp_path / "part", dataset=ds)
    assert again.metrics == resumed.metrics


class _PoisonParams(MethodParams):
    at_step: int = 0  # the step whose combined gradient is NaN


class _PoisonAtStep(WeightingMethod):
    """Test-only method: EW, but a NaN combined gradient at one step."""

    name = "test-poison"
    Params = _PoisonParams

    def combine(self, grads, active, side, losses, ctx):
        out = grads.sum(0)
        if ctx.step == self.hparams.at_step:
            out = out * float("nan")
        return CombineResult(out, torch.ones(grads.shape[0]))


def test_nan_stops_the_run_keeps_last_good_checkpoint(ds, tmp_path):
    if "test-poison" not in METHODS:
        register(_PoisonAtStep)
    cfg = small_cfg(method={"name": "test-poison", "params": {"at_step": 0}})
    steps = build_model(cfg, ds).tasks[0].steps_for_epoch()
    cfg = small_cfg(method={"name": "test-poison", "params": {"at_step": steps + 1}})  # in epoch 2
    with pytest.raises(TrainingDivergedError, match=f"step {steps + 1}"):
        train(cfg, tmp_path / "r", dataset=ds)
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["epoch"] == 1  # epochs finished: the first, the last good one
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["error"]


def test_check_finite_names_the_task():
    losses = torch.tensor([0.5, float("nan"), 0.2])
    with pytest.raises(TrainingDivergedError, match="loss at step 7 in task.*social:trust"):
        check_finite(losses, torch.zeros(2, 2), torch.zeros(3, 2, 2), ["rec", "social:trust", "x"], 7)


def test_config_overrides_and_errors(tmp_path):
    overrides = ["data.name=ciao", "method.name=pmtrec", "method.params.tau=0.5", "optim.lr=3e-3"]
    overrides.append("tasks.include=[social:trust]")  # YAML-parsed values
    cfg = load_config(overrides=overrides)
    assert cfg.method.params["tau"] == 0.5 and cfg.optim.lr == 3e-3
    assert cfg.tasks.include == ["social:trust"]
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        load_config(overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match="encoder.name"):
        load_config(overrides=["encoder.name=gat"])
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  name: ciao\nbogus: 1\n")
    with pytest.raises(ConfigError, match=f"{p}.*unknown key 'bogus'"):
        load_config(p)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(overrides=["optim.lr"])


def test_unknown_method_and_method_parameter_are_named(ds, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        train(small_cfg(method={"name": "nope", "params": {}}), tmp_path / "x", dataset=ds)
    with pytest.raises((TypeError, ValueError), match="bogus"):
        make_method("ew", 2, bogus=1)
    with pytest.raises(ConfigError, match=r"method\.params\.taux.*unknown parameter"):
        train(small_cfg(method={"name": "pmtrec", "params": {"taux": 1}}), tmp_path / "y", dataset=ds)
    assert not (tmp_path / "y" / "config.yaml").exists()  # nothing left that would block a fixed rerun
    run = train(small_cfg(method={"name": "pmtrec", "params": {"tau": 1}}), tmp_path / "y", dataset=ds)
    assert run.finished


@pytest.mark.slow
def test_cli_train_and_evaluate(tmp_path):
    import os

    env = {**os.environ, "PMTREC_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "run"
    args = [
        "--set",
        "data.name=synthetic",
        "--set",
        "data.loader_args={num_users: 150, num_items: 90}",
        "--set",
        "optim.epochs=2",
        "--set",
        "encoder.name=lightgcn",
        "--set",
        "encoder.dim=16",
        "--set",
        "encoder.num_layers=2",
    ]
    res = subprocess.run(
        [sys.executable, "-m", "pmtrec_lab.cli", "train", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "epoch 1/2" in res.stdout and "epoch 2/2" in res.stdout  # one line per epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"best_epoch", "valid", "test"} and "ndcg@20" in metrics["valid"]
    for f in ("config.yaml", "history.json", "per_user_test.parquet", "groups.json", "best.pt", "last.pt"):
        assert (out / f).is_file(), f
    run = load_run(out)
    assert run.per_user is not None and len(run.per_user) == metrics["users_evaluated"]
    ev = subprocess.run(
        [sys.executable, "-m", "pmtrec_lab.cli", "evaluate", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["ndcg@20"] == pytest.approx(metrics["test"]["ndcg@20"], rel=1e-6)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pmtrec_lab.cli",
            "train",
            "--set",
            "optim.lrr=1",
            "--out",
            str(tmp_path / "bad"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "unknown key 'optim.lrr'" in bad.stderr


# --- issue 26, item 6: the progress bar counts epochs from 1, like the log lines ---------------


@pytest.mark.parametrize(
    ("index", "epochs", "shown"), [(0, 1, "epoch 1/1"), (0, 15, "epoch 1/15"), (14, 15, "epoch 15/15")]
)
def test_progress_bar_names_the_epoch_as_the_log_lines_do(index, epochs, shown):
    from pmtrec_lab.train.trainer import _Progress

    bar = _Progress.make("bar", epochs).steps(4, index)  # the trainer passes the 0-based index
    try:
        assert bar.desc == shown
        assert list(bar) == [0, 1, 2, 3]
    finally:
        bar.close()
    assert list(_Progress.make("log", epochs).steps(4, index)) == [0, 1, 2, 3]  # no bar: a range


def test_progress_bars_and_log_lines_of_a_run_say_the_same_epochs(ds, tmp_path, capsys):
    train(small_cfg(progress="bar", optim={"epochs": 3}), tmp_path / "run", dataset=ds)
    captured = capsys.readouterr()
    logged = {int(n) for n in re.findall(r"\] epoch (\d+)/3 ", captured.out)}
    barred = {int(n) for n in re.findall(r"epoch (\d+)/3:", captured.err)}
    assert logged == barred == {1, 2, 3}
