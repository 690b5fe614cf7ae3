"""A learnable per-task vector with its own Adam optimizer (UW, GradNorm, FAMO).

The three loss-weighting methods with learnable weights (UW's log-variances, GradNorm's weights,
FAMO's logits) keep the same state: one [K] tensor, an Adam optimizer over it that the method
steps itself with an analytic gradient, and a checkpoint of both. ``LearnableTaskVector`` is that
state; each method holds one.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import torch

from pmtrec_lab.mtl._checks import check_state_keys

__all__ = ["LearnableTaskVector"]


class LearnableTaskVector:
    """``param`` [K] (a leaf with ``requires_grad``) and ``optimizer`` (Adam over it).

    ``method`` names the owner in error messages; ``key`` is the vector's name in the
    checkpoint (``{key: param, "optimizer": Adam state, **extra}``, the format UW, GradNorm and
    FAMO have always saved).
    """

    def __init__(self, method: str, key: str, init: torch.Tensor, *, lr: float, weight_decay: float = 0.0):
        if init.dim() != 1:
            raise ValueError(f"{method}: {key} must be a vector [K], got shape {tuple(init.shape)}")
        self.method = method
        self.key = key
        self.param = init.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.param], lr=lr, weight_decay=weight_decay)

    @property
    def value(self) -> torch.Tensor:
        """The current vector, detached (shares memory with ``param``)."""
        return self.param.detach()

    @property
    def device(self) -> torch.device:
        return self.param.device

    def step(self, grad: torch.Tensor) -> None:
        """One optimizer step with ``grad`` as the gradient of ``param``."""
        self.param.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def to(self, device: torch.device | str) -> LearnableTaskVector:
        """Move ``param`` and the optimizer's per-parameter state (Adam's step stays on CPU)."""
        self.param.data = self.param.data.to(device)
        for state in self.optimizer.state.values():
            for name, value in state.items():
                if name != "step" and isinstance(value, torch.Tensor):
                    state[name] = value.to(device)
        return self

    def state_dict(self, **extra: torch.Tensor | None) -> dict[str, Any]:
        """``{key: param, "optimizer": ..., **extra}`` (copies; an ``extra`` value may be None)."""
        return {
            self.key: self.param.detach().clone(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            **{k: None if v is None else v.clone() for k, v in extra.items()},
        }

    def load_state_dict(
        self, state: dict[str, Any], extra: Collection[str] = ()
    ) -> dict[str, torch.Tensor | None]:
        """Restore ``state_dict``'s output into ``param`` (in place, keeping its device and dtype)
        and the optimizer; return the ``extra`` entries as tensors on ``param``'s device (or None).

        Raises ValueError on other keys or a vector of another shape.
        """
        check_state_keys(self.method, state, {self.key, "optimizer", *extra})
        value = torch.as_tensor(state[self.key])
        if tuple(value.shape) != tuple(self.param.shape):
            raise ValueError(
                f"{self.method}: {self.key} must be [{self.param.shape[0]}], got {tuple(value.shape)}"
            )
        self.param.data = value.detach().clone().to(self.param.device, self.param.dtype)
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        return {
            k: None if state[k] is None else torch.as_tensor(state[k]).clone().to(self.param.device)
            for k in extra
        }
