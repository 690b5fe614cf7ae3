"""FAMO: Liu, Liang, Stone and Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023.

Task logits xi (start at 0), weights z = softmax(xi). The update is the gradient of
``sum_k z_k log(L_k - min_k)`` rescaled by ``c = (sum_k z_k / (L_k - min_k))^{-1}``, i.e.
``sum_k (z_k / (c (L_k - min_k))) grad L_k``, whose per-task coefficients sum to 1 (they are
also the ``head_weights``). After
the model's update, with the losses on the same batch, xi takes one Adam step (learning rate
``w_lr`` = 0.025, weight decay ``gamma`` = 1e-3) on the gradient ``J_softmax^T delta`` with
``delta_k = log(L_k - min_k) - log(L_k^after - min_k)`` (the log-loss decrease): a task whose
loss decreased less gains weight. Hyper-parameters as the paper / official code: gamma=1e-3,
w_lr=0.025, min_losses=0, and 1e-8 added inside the logs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl.base import CombineResult, StepContext, WeightingMethod, register
from pmtrec_lab.mtl.uncertainty import (
    check_positive,
    learnable_state,
    load_learnable_state,
    move_optimizer_state,
)

__all__ = ["FAMO"]

_EPS = 1e-8  # as in the official implementation


@register
class FAMO(WeightingMethod):
    """FAMO (Liu et al., NeurIPS 2023). Parameters: ``gamma`` (weight decay of the logits,
    default 1e-3), ``w_lr`` (Adam learning rate of the logits, default 0.025), ``min_losses``
    (a float or one per task, default 0: the losses' lower bounds).

    Needs ``after_step`` with the losses on the same batch after the update.
    State: logits, their Adam state and the losses of the pending step.
    """

    name: ClassVar[str] = "famo"
    needs_losses_after: ClassVar[bool] = True

    def __init__(
        self,
        num_tasks: int,
        gamma: float = 1e-3,
        w_lr: float = 0.025,
        min_losses: float | Sequence[float] = 0.0,
        **params: Any,
    ):
        super().__init__(num_tasks, **params)
        self.gamma = check_positive(self.name, "gamma", gamma, allow_zero=True)
        self.w_lr = check_positive(self.name, "w_lr", w_lr)
        mins = [min_losses] * num_tasks if isinstance(min_losses, int | float) else list(min_losses)
        if len(mins) != num_tasks or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in mins
        ):
            raise ValueError(
                f"method 'famo': min_losses must be a finite float or {num_tasks} floats, got {min_losses!r}"
            )
        self.min_losses = torch.tensor([float(v) for v in mins])
        self.logits = torch.zeros(num_tasks, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self._prev_losses: torch.Tensor | None = None

    def weights(self) -> torch.Tensor:
        """Current task weights z = softmax(xi) [K] (sum 1, detached)."""
        return torch.softmax(self.logits.detach(), dim=0)

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
        if self.logits.device != grads.device:
            self.to(grads.device)
        z = self.weights()
        losses = losses.detach().to(z)
        gap = losses - self.min_losses + _EPS
        c = (z / gap).sum()
        coef = z / gap / c
        self._prev_losses = losses.clone()
        coef_g = coef.to(grads.dtype)
        return CombineResult(
            combined=combine_rows(coef_g, grads),
            head_weights=coef_g,
            diagnostics={"task_weights": z.to(grads.dtype)},
        )

    @torch.no_grad()
    def after_step(self, losses_after: torch.Tensor, ctx: StepContext) -> None:
        if self._prev_losses is None:
            raise RuntimeError("famo: after_step called without a preceding combine")
        after = losses_after.detach().to(self._prev_losses)
        delta = (self._prev_losses - self.min_losses + _EPS).log() - (after - self.min_losses + _EPS).log()
        z = self.weights()
        self.logits.grad = z * (delta - (z * delta).sum())  # J_softmax^T delta
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._prev_losses = None

    def parameters(self) -> list[torch.Tensor]:
        return [self.logits]

    def to(self, device: torch.device | str) -> FAMO:
        self.logits.data = self.logits.data.to(device)
        self.min_losses = self.min_losses.to(device)
        move_optimizer_state(self.optimizer, device)
        if self._prev_losses is not None:
            self._prev_losses = self._prev_losses.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return learnable_state("logits", self.logits, self.optimizer, prev_losses=self._prev_losses)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = load_learnable_state(
            self.name, "logits", self.logits, self.optimizer, state, extra=("prev_losses",)
        )
        self._prev_losses = extra["prev_losses"]
