"""Regression tests for findings of the second review of PMTRec, the step, the trainer and the tasks."""

from __future__ import annotations

import pytest
import torch

from pmtrec_lab.tasks.base import Task, TaskBatch
from pmtrec_lab.train.step import layout_step
from pmtrec_lab.train.trainer import build_model, train
from tests.helpers import tiny_synthetic
from tests.test_training import small_cfg


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


def test_task_sampling_data_stays_on_cpu_when_the_model_moves(ds):
    """``model.to(device)`` used to move the tasks' sampling tables (registered buffers) to the
    device, while negatives are drawn with the epoch's CPU generator and ``layout_step`` indexes
    a CPU mask: every ``device: cuda`` run crashed in its first step ("Tensor on device cpu is
    not on the expected device"). "meta" stands in for an accelerator here."""
    model = build_model(small_cfg(), ds).to("meta")
    tasks = list(model.tasks)
    gen = torch.Generator().manual_seed(0)
    steps = tasks[0].steps_for_epoch()
    for t in tasks:
        t.start_epoch(steps, gen)
    batches = [t.next_batch(gen) for t in tasks]
    for t, b in zip(tasks, batches):
        for role, ids in b.roles.items():
            assert ids.device.type == "cpu", (t.name, role)
    lay = layout_step(batches, torch.device("cpu"))
    assert lay.active.shape[1] == len(tasks)
    # the heads are parameters and still move with the model
    assert all(p.device.type == "meta" for t in tasks for p in t.head_parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_runs_on_cuda(ds, tmp_path):
    cfg = small_cfg(device="cuda", method={"name": "pmtrec", "params": {}}, optim={"epochs": 2})
    run = train(cfg, tmp_path / "cuda", dataset=ds)
    assert run.finished and run.metrics["best_epoch"] >= 1


class _Rows(Task):
    """A task whose batch is just its row indices (to check the epoch plan)."""

    def make_batch(self, rows, generator):
        return TaskBatch({"entity": rows}, user_roles=("entity",), item_roles=())


@pytest.mark.parametrize(("n", "steps"), [(1010, 50), (100, 60), (5, 4)])
def test_auxiliary_task_covers_its_rows_exactly_once_per_epoch(n, steps):
    task = _Rows("aux", n, None)
    gen = torch.Generator().manual_seed(0)
    task.start_epoch(steps, gen)
    seen = torch.cat([task.next_batch(gen).roles["entity"] for _ in range(steps)])
    assert sorted(seen.tolist()) == list(range(n))


def test_auxiliary_task_with_fewer_rows_than_steps_serves_one_row_per_step():
    task = _Rows("aux", 3, None)
    gen = torch.Generator().manual_seed(0)
    task.start_epoch(7, gen)
    batches = [task.next_batch(gen).roles["entity"] for _ in range(7)]
    assert all(len(b) == 1 for b in batches)
    assert set(torch.cat(batches).tolist()) == {0, 1, 2}


def test_task_loss_setting_is_validated_and_applied():
    from pmtrec_lab.tasks import build_tasks
    from tests.helpers import tiny_synthetic
    from tests.test_training import small_cfg

    ds = tiny_synthetic()

    def cfg_with(custom):
        return small_cfg(tasks={"include": [], "custom": custom})

    def build(cfg):
        return build_tasks(cfg, ds, cfg.encoder.dim)

    auto = build(cfg_with([{"type": "item_label", "source": "category"}]))[1]
    assert auto.multi is False  # single-label set: softmax
    bce = build(cfg_with([{"type": "item_label", "source": "category", "loss": "bce"}]))[1]
    assert bce.multi is True
    gen = torch.Generator().manual_seed(0)
    bce.start_epoch(1, gen)
    y = bce.next_batch(gen).extra["y"]
    assert y.shape[1] == bce.num_labels and bool((y.sum(1) == 1).all())  # one-hot targets
    with pytest.raises(ValueError, match="loss 'bpr' does not fit label set 'category'"):
        build(cfg_with([{"type": "item_label", "source": "category", "loss": "bpr"}]))
    with pytest.raises(ValueError, match="loss 'softmax' does not fit a social task"):
        build(cfg_with([{"type": "social", "source": "friends", "loss": "softmax"}]))
