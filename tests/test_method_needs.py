"""What a weighting method needs from the trainer is one declared set (issue 25, item 5):
``WeightingMethod.needs`` (``Need`` members), which the trainer reads once per run, so a new
method adds no trainer branch. The old flags (``needs_meta``, ``needs_losses_after``,
``reads_meta_split``) derive from it; a plugin still setting a flag as a class bool keeps working."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from pmtrec_lab.config import load_config
from pmtrec_lab.errors import PmtrecError
from pmtrec_lab.mtl import (
    META_SPLIT_NEEDS,
    CombineResult,
    Need,
    WeightingMethod,
    make_method,
    method_names,
    registry,
)
from pmtrec_lab.train import train
from pmtrec_lab.train.trainer import _method_needs


@pytest.mark.parametrize("name", method_names())
def test_the_old_flags_derive_from_the_needs(name):
    m = make_method(name, 3)
    assert isinstance(m.needs, frozenset) and m.needs <= set(Need)
    assert m.needs_meta == (Need.META_GRADIENTS in m.needs)
    assert m.needs_losses_after == (Need.LOSSES_AFTER in m.needs)
    assert m.reads_meta_split == bool(m.needs & META_SPLIT_NEEDS)
    assert (Need.META_LOSS in m.needs) == (m.meta_value_every is not None)
    assert _method_needs(m) == m.needs


@pytest.mark.parametrize(
    ("name", "params", "needs"),
    [
        ("ew", {}, set()),
        ("famo", {}, {Need.LOSSES_AFTER}),
        ("pmtrec", {}, set()),
        ("pmtrec", {"usefulness": "meta_cos"}, {Need.META_GRADIENTS}),
        ("pmtrec", {"delta": "learned"}, {Need.META_GRADIENTS}),
        ("pmtrec", {"usefulness": "meta_spsa"}, {Need.META_LOSS}),
    ],
)
def test_declared_needs(name, params, needs):
    assert make_method(name, 3, **params).needs == needs


class _Counting(WeightingMethod):
    """EW that counts the trainer's ``after_step`` calls."""

    calls: ClassVar[list[int]]

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        return CombineResult(grads.sum(0), torch.ones(grads.shape[0], dtype=grads.dtype))

    def after_step(self, losses_after, ctx) -> None:
        type(self).calls.append(ctx.step)


class _Declared(_Counting):
    name = "test-needs-declared"
    NEEDS = frozenset({Need.LOSSES_AFTER})


class _Legacy(_Counting):
    name = "test-needs-legacy"
    needs_losses_after = True  # the flag as plugins set it before ``needs``


class _Nothing(_Counting):
    name = "test-needs-nothing"


def test_a_legacy_class_flag_is_folded_into_the_needs():
    assert _Legacy.NEEDS == {Need.LOSSES_AFTER} and _Legacy(3).needs_losses_after
    assert _Legacy(3).needs == _Declared(3).needs
    with pytest.raises(TypeError, match=r"Broken.needs_meta: .*Need.META_GRADIENTS"):

        class Broken(WeightingMethod):
            @property
            def needs_meta(self) -> bool:  # could disagree with ``needs``: refused
                return True


@pytest.mark.parametrize(("cls", "expect_calls"), [(_Declared, True), (_Legacy, True), (_Nothing, False)])
def test_the_trainer_serves_the_declared_needs(tmp_path, monkeypatch, cls, expect_calls):
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))
    registry.register(cls)
    try:
        cls.calls = []
        cfg = load_config(
            overrides=[
                "data.name=synthetic",
                "data.loader_args={num_users: 60, num_items: 40}",
                "optim.epochs=1",
                "encoder.dim=8",
                "progress=none",
                f"method.name={cls.name}",
            ]
        )
        train(cfg, tmp_path / "run")
        assert bool(cls.calls) == expect_calls
        if expect_calls:
            assert cls.calls == list(range(len(cls.calls)))  # once per step, after it
    finally:
        registry._REGISTRY.pop(cls.name, None)


def test_a_need_the_trainer_does_not_serve_is_refused():
    class Unserved(_Counting):
        name = "test-needs-unserved"
        NEEDS = frozenset({"gpu_minutes"})

    with pytest.raises(PmtrecError, match=r"'test-needs-unserved' needs 'gpu_minutes', which the trainer"):
        _method_needs(Unserved(3))

    class NoWindow(_Counting):
        name = "test-needs-no-window"
        NEEDS = frozenset({Need.META_LOSS})

    with pytest.raises(PmtrecError, match="needs the meta loss but sets no meta_value_every"):
        _method_needs(NoWindow(3))
