"""``WeightingMethod.combine`` as a template (issue 25, item 5): every registered method has its
inputs checked once by the base class, with a ValueError naming the method and the mismatch, and
the checks read no tensor value (no host sync); callers of ``combine`` see what they saw before."""

from __future__ import annotations

import pytest
import torch

from pmtrec_lab.mtl import CombineResult, StepContext, WeightingMethod, make_method, method_names

K, E, D = 3, 6, 4


def inputs():
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(K, E, D, generator=gen, dtype=torch.float64)
    active = torch.ones(E, K, dtype=torch.bool)
    side = torch.tensor([0, 0, 0, 1, 1, 1])
    losses = torch.rand(K, generator=gen, dtype=torch.float64) + 0.1
    return grads, active, side, losses


def ctx() -> StepContext:
    return StepContext(step=0, epoch=0, steps_per_epoch=1, task_names=[f"t{i}" for i in range(K)],
                       generator=torch.Generator().manual_seed(0))  # fmt: skip


def all_methods() -> list[str]:
    return method_names()


@pytest.mark.parametrize("name", all_methods())
def test_every_method_implements_the_template_part(name):
    """No method overrides ``combine`` itself: the checks cannot be skipped by a method."""
    cls = type(make_method(name, K))
    assert cls.combine is WeightingMethod.combine
    assert cls._combine is not WeightingMethod._combine


BAD = {
    "tasks": (lambda g, a, s, l: (g[:2], a[:, :2], s, l[:2]), "built for 3 tasks, got grads for 2"),
    "grads_dim": (lambda g, a, s, l: (g[0], a, s, l), r"grads must be a \[K, E, D\] tensor, got \(6, 4\)"),
    "active_shape": (lambda g, a, s, l: (g, a[:5], s, l), r"active must be an \[E, K\] = \(6, 3\) bool"),
    "active_dtype": (lambda g, a, s, l: (g, a.float(), s, l), r"bool tensor, got \(6, 3\) float32"),
    "side_shape": (lambda g, a, s, l: (g, a, s[:5], l), r"side must be an \[E\] = \(6,\) tensor, got \(5,\)"),
    "losses_shape": (lambda g, a, s, l: (g, a, s, l[:2]), r"losses must be a \[K\] = \(3,\) tensor, got \(2"),
    "losses_type": (lambda g, a, s, l: (g, a, s, [1.0, 1.0, 1.0]), r"losses must be .* got list"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("name", all_methods())
def test_bad_inputs_name_the_method_and_the_mismatch(name, case):
    make, message = BAD[case]
    method = make_method(name, K)
    with pytest.raises(ValueError, match=rf"^{method.name}: .*{message}"):
        method.combine(*make(*inputs()), ctx())


def test_checks_read_no_tensor_value(monkeypatch):
    """Shapes and dtypes only: a value read (``.item()``, ``bool(t)``, ``float(t)``) would be a host
    sync on an accelerator at every step."""
    method = make_method("ew", K)
    grads, active, side, losses = inputs()

    def refuse(*args, **kwargs):
        raise AssertionError("the input checks read a tensor value")

    for attr in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, attr, refuse)
    method.check_inputs(grads, active, side, losses)
    method.check_inputs(grads, None, None, losses)  # flattened-block methods may get no rows


def test_a_subclass_overriding_combine_still_works():
    """A plugin written before the template (it overrides ``combine``) keeps working, and one that
    implements neither part is named when called."""

    class Old(WeightingMethod):
        name = "test-old-style"

        def combine(self, grads, active, side, losses, ctx):
            return CombineResult(combined=grads.sum(0), head_weights=torch.ones(grads.shape[0]))

    grads, active, side, losses = inputs()
    torch.testing.assert_close(Old(K).combine(grads, active, side, losses, ctx()).combined, grads.sum(0))

    class Nothing(WeightingMethod):
        name = "test-nothing"

    with pytest.raises(NotImplementedError, match="'test-nothing' implements no _combine"):
        Nothing(K).combine(grads, active, side, losses, ctx())
