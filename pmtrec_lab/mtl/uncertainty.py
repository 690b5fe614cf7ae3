"""Uncertainty Weighting (UW): Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics", CVPR 2018.

Each task has a learnable log-variance s_k; the objective is ``sum_k exp(-s_k) L_k + s_k``
(the usual form of Kendall et al.'s ``L_k / (2 sigma_k^2) + log sigma_k`` with
s_k = log sigma_k^2, up to a factor 2 that does not change the weights' ratios). The task
weights are ``exp(-s_k)``; s starts at 0 (weights 1, i.e. EW). Hyper-parameters: the
learning rate of s. LibMTL trains s with the model's optimizer, so its learning rate is the
model's; here s has its own Adam (``lr``, default 2e-3, the project's MF learning rate).

In ``combine`` the update uses the weights from the current s; s then takes one Adam step on
the analytic gradient ``d/ds_k = 1 - exp(-s_k) L_k`` (its stationary point is w_k = 1/L_k: a
task with a large loss is down-weighted).
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch

from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl.base import CombineResult, StepContext, WeightingMethod, register

__all__ = ["UncertaintyWeighting", "check_positive", "move_optimizer_state"]


def check_positive(method: str, name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Validate a finite positive (or non-negative) real hyper-parameter; return it as float."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"method {method!r}: {name} must be a finite float {bound}, got {value!r}")
    return float(value)


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move an optimizer's per-parameter state tensors to ``device`` (Adam's step stays on CPU)."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and isinstance(value, torch.Tensor):
                state[key] = value.to(device)


def learnable_state(
    key: str, param: torch.Tensor, optimizer: torch.optim.Optimizer, **extra: torch.Tensor | None
) -> dict[str, Any]:
    """A learnable task vector's checkpoint: ``{key: param, "optimizer": ..., **extra}`` (copies)."""
    return {
        key: param.detach().clone(),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        **{k: None if v is None else v.clone() for k, v in extra.items()},
    }


def load_learnable_state(
    method: str,
    key: str,
    param: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: tuple[str, ...] = (),
) -> dict[str, torch.Tensor | None]:
    """Restore :func:`learnable_state`'s ``state`` into ``param`` ([K], in place, on its device and
    dtype) and ``optimizer``; return the ``extra`` entries as tensors on ``param``'s device (or None).
    Raises ValueError on other keys or a vector of another shape."""
    keys = {key, "optimizer", *extra}
    if set(state) != keys:
        raise ValueError(f"{method} state must have keys {sorted(keys)}, got {sorted(state)}")
    value = torch.as_tensor(state[key])
    if tuple(value.shape) != tuple(param.shape):
        raise ValueError(f"{method}: {key} must be [{param.shape[0]}], got {tuple(value.shape)}")
    param.data = value.detach().clone().to(param.device, param.dtype)
    optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    return {
        k: None if state[k] is None else torch.as_tensor(state[k]).clone().to(param.device) for k in extra
    }


@register
class UncertaintyWeighting(WeightingMethod):
    """UW (Kendall et al., CVPR 2018): weights exp(-s_k) with learnable log-variances s_k.

    Parameters: ``lr`` (Adam learning rate of s, default 2e-3), ``init_log_var`` (s at the
    start, default 0.0). State: s and its Adam state.
    """

    name: ClassVar[str] = "uw"

    def __init__(self, num_tasks: int, lr: float = 2e-3, init_log_var: float = 0.0, **params: Any):
        super().__init__(num_tasks, **params)
        self.lr = check_positive(self.name, "lr", lr)
        if not isinstance(init_log_var, int | float) or not math.isfinite(init_log_var):
            raise ValueError(f"method 'uw': init_log_var must be a finite float, got {init_log_var!r}")
        self.log_var = torch.full((num_tasks,), float(init_log_var), requires_grad=True)
        self.optimizer = torch.optim.Adam([self.log_var], lr=self.lr)

    def weights(self) -> torch.Tensor:
        """Current task weights exp(-s) [K] (detached)."""
        return torch.exp(-self.log_var.detach())

    @torch.no_grad()
    def combine(
        self,
        grads: torch.Tensor,
        active: torch.Tensor,
        side: torch.Tensor,
        losses: torch.Tensor,
        ctx: StepContext,
    ) -> CombineResult:
        k, e, _ = grads.shape
        self.check_num_tasks(grads)
        if self.log_var.device != grads.device:
            self.to(grads.device)
        w = self.weights()
        combined = combine_rows(w.to(grads.dtype), grads)
        # One Adam step on sum_k exp(-s_k) L_k + s_k.
        self.log_var.grad = 1.0 - w * losses.detach().to(w)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        w_out = w.to(grads.dtype)
        return CombineResult(combined=combined, head_weights=w_out, diagnostics={"task_weights": w_out})

    def parameters(self) -> list[torch.Tensor]:
        return [self.log_var]

    def to(self, device: torch.device | str) -> UncertaintyWeighting:
        self.log_var.data = self.log_var.data.to(device)
        move_optimizer_state(self.optimizer, device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return learnable_state("log_var", self.log_var, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_learnable_state(self.name, "log_var", self.log_var, self.optimizer, state)
