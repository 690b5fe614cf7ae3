"""Loss-weighting baselines (single-task, UW, DWA, GradNorm, FAMO, MetaBalance): the property
each paper promises, finite outputs of the right shapes, exact resume from state_dict."""

from __future__ import annotations

import pytest
import torch

from pmtrec_lab.mtl import MethodParamsError, StepContext, make_method

BASELINES = ("single-task", "uw", "dwa", "gradnorm", "famo", "metabalance")


def make_ctx(step: int = 0, k: int = 3) -> StepContext:
    return StepContext(
        step=step,
        epoch=step // 10,
        steps_per_epoch=10,
        task_names=[f"t{i}" for i in range(k)],
        generator=torch.Generator().manual_seed(0),
    )


def random_problem(k: int = 3, e: int = 30, d: int = 6, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(e, k, generator=g) < 0.6
    active[:, 0] |= torch.arange(e) % 2 == 0
    none = ~active.any(1)
    active[none, 0] = True
    grads = torch.randn(k, e, d, generator=g, dtype=dtype) * active.T.unsqueeze(-1)
    side = (torch.arange(e) >= e // 2).long()
    losses = torch.rand(k, generator=g, dtype=dtype) + 0.5
    return grads, active, side, losses


def run_step(method, seed: int, step: int):
    grads, active, side, losses = random_problem(seed=seed)
    ctx = make_ctx(step=step)
    out = method.combine(grads, active, side, losses, ctx)
    if method.needs_losses_after:
        method.after_step(losses * 0.9 ** torch.arange(1, 4, dtype=losses.dtype), ctx)
    if step % 3 == 2:
        method.on_epoch_end(losses * (1 + 0.1 * step), step // 3)
    return out


@pytest.mark.parametrize("name", BASELINES)
def test_finite_outputs_of_the_right_shapes(name):
    method = make_method(name, 3)
    for step in range(8):
        out = run_step(method, seed=step, step=step)
        assert out.combined.shape == (30, 6) and out.combined.dtype == torch.float32
        assert out.head_weights.shape == (3,)
        assert torch.isfinite(out.combined).all() and torch.isfinite(out.head_weights).all()
        for value in out.diagnostics.values():
            assert not value.requires_grad


@pytest.mark.parametrize("name", BASELINES)
def test_state_dict_resume_is_exact(name):
    a = make_method(name, 3)
    for step in range(5):
        run_step(a, seed=step, step=step)
    b = make_method(name, 3)
    b.load_state_dict(a.state_dict())
    for step in range(5, 9):  # the next steps match exactly, state updates included
        oa = run_step(a, seed=step, step=step)
        ob = run_step(b, seed=step, step=step)
        assert torch.equal(oa.combined, ob.combined), step
        assert torch.equal(oa.head_weights, ob.head_weights), step


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_parameter_is_named(name):
    with pytest.raises(MethodParamsError, match="not_a_param"):
        make_method(name, 3, not_a_param=1)


@pytest.mark.parametrize(
    ("name", "params", "word"),
    [
        ("uw", {"lr": 0.0}, "lr"),
        ("dwa", {"temperature": -1.0}, "temperature"),
        ("gradnorm", {"alpha": -0.5}, "alpha"),
        ("famo", {"w_lr": float("nan")}, "w_lr"),
        ("famo", {"min_losses": [0.0, 1.0]}, "min_losses"),
        ("metabalance", {"relax": 1.5}, "relax"),
        ("metabalance", {"beta": 1.0}, "beta"),
        ("metabalance", {"strategy": "both"}, "strategy"),
    ],
)
def test_invalid_values_are_named(name, params, word):
    with pytest.raises(MethodParamsError, match=f"method.params.{word}"):
        make_method(name, 3, **params)


def test_single_task_ignores_auxiliary_tasks():
    """The main task is task 0, always (``params.MAIN_TASK``)."""
    grads, active, side, losses = random_problem(seed=1)
    out = make_method("single-task", 3).combine(grads, active, side, losses, make_ctx())
    assert torch.equal(out.combined, grads[0])
    assert out.head_weights.tolist() == [1.0, 0.0, 0.0]
    noisy = grads.clone()
    noisy[1:] *= 1e3
    out2 = make_method("single-task", 3).combine(noisy, active, side, losses, make_ctx())
    assert torch.equal(out2.combined, out.combined)


def test_uncertainty_weighting_downweights_large_loss_task():
    """d/ds_k (exp(-s_k) L_k + s_k) = 1 - exp(-s_k) L_k: at s = 0 it is negative for L > 1 (s
    grows, the weight exp(-s) falls) and positive for L < 1 (the weight rises)."""
    method = make_method("uw", 2, lr=0.05)
    grads, active, side, _ = random_problem(k=2, seed=2)
    losses = torch.tensor([0.2, 5.0])
    first = method.combine(grads, active, side, losses, make_ctx(k=2))
    torch.testing.assert_close(first.head_weights, torch.ones(2))  # s starts at 0: EW
    torch.testing.assert_close(first.combined, grads.sum(0))
    for step in range(1, 30):
        out = method.combine(grads, active, side, losses, make_ctx(step=step, k=2))
    w = out.head_weights
    assert w[0] > 1.0 > w[1]
    torch.testing.assert_close(out.combined, w[0] * grads[0] + w[1] * grads[1])
    # The optimum is w_k = 1 / L_k: many steps approach it.
    for step in range(30, 2000):
        out = method.combine(grads, active, side, losses, make_ctx(step=step, k=2))
    torch.testing.assert_close(out.head_weights, 1 / losses, rtol=0.05, atol=0)


def test_dwa_equal_first_two_epochs_then_favours_slower_task():
    method = make_method("dwa", 3)
    grads, active, side, losses = random_problem(seed=3)
    ones = torch.ones(3)
    assert torch.equal(method.combine(grads, active, side, losses, make_ctx()).head_weights, ones)
    method.on_epoch_end(torch.tensor([1.0, 1.0, 1.0]), 0)
    assert torch.equal(method.combine(grads, active, side, losses, make_ctx()).head_weights, ones)
    method.on_epoch_end(torch.tensor([0.5, 0.9, 1.0]), 1)  # task 0 fell fastest, task 2 not at all
    w = method.combine(grads, active, side, losses, make_ctx()).head_weights
    ratios = torch.tensor([0.5, 0.9, 1.0])
    expected = 3 * torch.exp(ratios / 2) / torch.exp(ratios / 2).sum()  # K softmax(w / T), T = 2
    torch.testing.assert_close(w, expected)
    assert w[0] < w[1] < w[2]
    assert float(w.sum()) == pytest.approx(3.0)
    # Only the two most recent epochs count.
    method.on_epoch_end(torch.tensor([0.5, 0.9, 0.5]), 2)
    w2 = method.combine(grads, active, side, losses, make_ctx()).head_weights
    assert w2[2] < w2[0]


def test_gradnorm_weights_sum_to_k_and_favour_slow_task():
    """Equal gradient norms; task 0's loss falls, task 1's stays at its initial value: task 1's
    relative inverse training rate exceeds 1, so its target norm and weight rise."""
    method = make_method("gradnorm", 2, lr=0.01)
    g = torch.Generator().manual_seed(4)
    grads = torch.randn(2, 20, 4, generator=g)
    grads[1] = grads[1] * grads[0].norm() / grads[1].norm()
    active = torch.ones(20, 2, dtype=torch.bool)
    side = torch.zeros(20, dtype=torch.long)
    for step in range(50):
        losses = torch.tensor([1.0 * 0.95**step, 1.0])
        out = method.combine(grads, active, side, losses, make_ctx(step=step, k=2))
        w = method.parameters()[0].detach()
        assert float(w.sum()) == pytest.approx(2.0, abs=1e-5)
        assert (w > 0).all()
    assert out.head_weights[1] > 1.0 > out.head_weights[0]
    torch.testing.assert_close(out.combined, out.head_weights[0] * grads[0] + out.head_weights[1] * grads[1])


def test_famo_weights_sum_to_one_and_shift_to_slower_task():
    method = make_method("famo", 2)
    grads, active, side, _ = random_problem(k=2, seed=5)
    for step in range(20):
        losses = torch.tensor([1.0, 2.0])
        out = method.combine(grads, active, side, losses, make_ctx(step=step, k=2))
        # Coefficients z_k / (c L_k), c = sum_j z_j / L_j, sum to 1.
        assert float(out.head_weights.sum()) == pytest.approx(1.0, abs=1e-6)
        z = out.diagnostics["task_weights"]
        assert float(z.sum()) == pytest.approx(1.0, abs=1e-6)
        expected = (z / losses) / (z / losses).sum()
        torch.testing.assert_close(out.head_weights, expected)
        # Task 0's loss falls by 20% per step, task 1's by 1%: weight moves to task 1.
        method.after_step(losses * torch.tensor([0.8, 0.99]), make_ctx(step=step, k=2))
    z = torch.softmax(method.parameters()[0].detach(), 0)
    assert z[1] > 0.5 > z[0]
    with pytest.raises(RuntimeError):
        method.after_step(torch.ones(2), make_ctx(k=2))  # no pending combine


def test_metabalance_rescales_auxiliary_blocks_towards_main():
    """First step (moving averages start at the first value): per side, the auxiliary block's
    norm n_k becomes n_k (r n_0 / n_k + 1 - r) = r n_0 + (1 - r) n_k; with r = 1 it equals n_0."""
    g = torch.Generator().manual_seed(6)
    k, e, d = 3, 40, 5
    grads = torch.randn(k, e, d, generator=g) * torch.tensor([1.0, 20.0, 0.05]).view(k, 1, 1)
    active = torch.ones(e, k, dtype=torch.bool)
    side = (torch.arange(e) >= 15).long()
    losses = torch.ones(k)
    for relax in (1.0, 0.7):
        method = make_method("metabalance", k, relax=relax)
        out = method.combine(grads, active, side, losses, make_ctx())
        # Recover each task's rescaled block: grads are linear, so combine one task at a time.
        for s in (0, 1):
            rows = side == s
            n0 = grads[0][rows].norm()
            for task in (1, 2):
                scaled = (
                    out.combined[rows]
                    - grads[0][rows]
                    - grads[3 - task][rows] * (relax * n0 / grads[3 - task][rows].norm() + 1 - relax)
                )
                expected = relax * n0 + (1 - relax) * grads[task][rows].norm()
                torch.testing.assert_close(scaled.norm(), expected, rtol=1e-4, atol=0)
        assert out.head_weights.tolist() == [1.0, 1.0, 1.0]
        ratio_after = out.diagnostics["norm_ratio_after"]
        if relax == 1.0:
            torch.testing.assert_close(ratio_after, torch.ones(2, k))


@pytest.mark.parametrize("name", ["uw", "dwa", "gradnorm", "famo", "metabalance", "pmtrec"])
def test_wrong_number_of_tasks_is_named(name):
    from pmtrec_lab.mtl import StepContext, make_method

    m = make_method(name, 3)
    grads = torch.randn(2, 4, 5)
    active = torch.ones(4, 2, dtype=torch.bool)
    side = torch.zeros(4, dtype=torch.int64)
    ctx = StepContext(0, 0, 1, ["a", "b"], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=f"{name}: built for 3 tasks, got grads for 2"):
        m.combine(grads, active, side, torch.ones(2), ctx)


def test_side_magnitude_ema_starts_at_first_value_and_keeps_untouched():
    """``SideMagnitudeEMA.update``: per (side, task) the mean per-entity norm over the touched
    entities; the average starts at the first value, then decay * m + (1 - decay) * value, and
    is kept where a task touched no entity of a side. State round-trips."""
    from pmtrec_lab.mtl._gram import side_onehot
    from pmtrec_lab.mtl._magnitude import SideMagnitudeEMA

    k, e, decay = 3, 12, 0.8
    ema = SideMagnitudeEMA(2, k, decay, owner="test")
    side = (torch.arange(e) >= 5).long()
    onehot = side_onehot(side, torch.float64, 2)
    ref = torch.zeros(2, k, dtype=torch.float64)
    seen = torch.zeros(2, k, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        act = (torch.rand(k, e, generator=g) < 0.5).double()
        if step == 2:
            act[1] = 0.0  # task 1 touches nothing: its averages stay
        norms = torch.rand(k, e, generator=g, dtype=torch.float64) * act
        m = ema.update(norms, act, onehot)
        for s in (0, 1):
            for t in range(k):
                rows = (side == s) & (act[t] > 0)
                if rows.any():
                    value = norms[t, rows].mean()
                    ref[s, t] = decay * ref[s, t] + (1 - decay) * value if seen[s, t] else value
                    seen[s, t] = True
        torch.testing.assert_close(m, ref, rtol=1e-12, atol=0)
        assert torch.equal(ema.initialized, seen)
    again = SideMagnitudeEMA(2, k, decay, owner="test")
    again.load_state_dict(ema.state_dict())
    assert torch.equal(again.magnitude, ema.magnitude) and torch.equal(again.initialized, ema.initialized)
    with pytest.raises(ValueError, match="test state must have keys"):
        again.load_state_dict({"magnitude": ema.magnitude})
    with pytest.raises(ValueError, match=r"test state tensors must be \(2, 3\)"):
        again.load_state_dict({"magnitude": torch.zeros(2, 2), "initialized": torch.zeros(2, 2)})
