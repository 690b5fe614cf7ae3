"""The closed-form task gradients (``optim.task_gradients: analytic``) against autograd, the
reference: every task type, float64 to 1e-12 and float32 to 1e-6, the step's combined result, and
a short training run whose metrics agree to float rounding."""

from __future__ import annotations

import pytest
import torch

from pmtrec_lab.config import load_config
from pmtrec_lab.data import dataset_for_config
from pmtrec_lab.tasks import build_tasks
from pmtrec_lab.train.step import layout_step, task_gradients

SMALL = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}


def _setup(tasks_include, dtype, seed=0):
    cfg = load_config(
        base={
            "data": {"name": "synthetic", "loader_args": SMALL},
            "tasks": {"include": tasks_include},
            "encoder": {"name": "mf", "dim": 8},
            "optim": {"batch_size": 64},
        }
    )
    ds = dataset_for_config(cfg.data)
    torch.manual_seed(seed)
    tasks = build_tasks(cfg, ds, 8)
    for t in tasks:
        t.to(dtype)
        t.start_epoch(4, torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed)
    batches = [t.next_batch(gen) for t in tasks]
    layout = layout_step(batches, torch.device("cpu"))
    zu = torch.randn(layout.users.numel(), 8, dtype=dtype, generator=gen).requires_grad_(True)
    zi = torch.randn(layout.items.numel(), 8, dtype=dtype, generator=gen).requires_grad_(True)
    return tasks, batches, layout, zu, zi


@pytest.mark.parametrize(
    "tasks_include",
    [
        ["social:friends"],  # BPR main + BPR user-user
        ["item_label:category"],  # softmax head
        ["social:friends", "item_label:category", "user_label:community"],  # all, user and item heads
    ],
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_closed_form_equals_autograd(tasks_include, dtype, tol):
    tasks, batches, layout, zu, zi = _setup(tasks_include, dtype)
    ref_losses, ref_grads, ref_heads = task_gradients(zu, zi, tasks, batches, layout)
    losses, grads, heads = task_gradients(zu, zi, tasks, batches, layout, analytic=True)
    assert torch.allclose(losses, ref_losses, atol=tol, rtol=0)
    assert torch.allclose(grads, ref_grads, atol=tol, rtol=0)
    assert grads.abs().max() > 0  # something to compare
    for ref, got in zip(ref_heads, heads, strict=True):
        assert len(ref) == len(got)
        for r, g in zip(ref, got, strict=True):
            assert torch.allclose(g, r, atol=tol, rtol=0)


def test_multi_label_heads_match_autograd():
    """lastfm-like multi-label BCE: the synthetic release has none, so a planted multi-label set."""
    import numpy as np

    from pmtrec_lab.data.types import LabelSet
    from pmtrec_lab.tasks.base import TaskBatch  # noqa: F401
    from pmtrec_lab.tasks.label import LabelTask

    rng = np.random.default_rng(0)
    labels = LabelSet(
        name="tag",
        side="item",
        entity=rng.integers(0, 30, 200),
        label=rng.integers(0, 7, 200),
        num_labels=7,
        multi=True,
        names=[f"t{i}" for i in range(7)],
    )
    task = LabelTask("item_label:tag", labels, 6, 16).double()
    task.start_epoch(2, torch.Generator().manual_seed(0))
    batch = task.next_batch(torch.Generator().manual_seed(0))
    layout = layout_step([batch], torch.device("cpu"))
    zu = torch.zeros(0, 6, dtype=torch.float64, requires_grad=True)
    zi = torch.randn(layout.items.numel(), 6, dtype=torch.float64, requires_grad=True)
    ref = task_gradients(zu, zi, [task], [batch], layout)
    got = task_gradients(zu, zi, [task], [batch], layout, analytic=True)
    assert torch.allclose(got[0], ref[0], atol=1e-12) and torch.allclose(got[1], ref[1], atol=1e-12)
    for r, g in zip(ref[2][0], got[2][0], strict=True):
        assert torch.allclose(g, r, atol=1e-12)


@pytest.mark.slow
def test_a_short_run_agrees_to_float_rounding(tmp_path):
    from pmtrec_lab.train import train

    def run(mode):
        cfg = load_config(
            base={
                "data": {"name": "synthetic", "loader_args": SMALL},
                "encoder": {"name": "mf", "dim": 16},
                "method": {"name": "pmtrec"},
                "optim": {"epochs": 3, "lr": 0.01, "batch_size": 256, "task_gradients": mode},
                "progress": "none",
            }
        )
        return train(cfg, tmp_path / mode)

    ref, got = run("autograd"), run("analytic")
    for split in ("valid", "test"):
        assert got.metrics[split]["ndcg@20"] == pytest.approx(ref.metrics[split]["ndcg@20"], abs=2e-3)
    import json

    histories = [json.loads((r.path / "history.json").read_text()) for r in (ref, got)]
    for a, b in zip(*histories, strict=True):
        losses = [key for key in a if key.startswith("loss/")]
        assert losses
        for key in losses:
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
