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

from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator

from pmtrec_lab.mtl._checks import per_task_values
from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl._learnable import LearnableTaskVector
from pmtrec_lab.mtl.base import CombineResult, Need, StepContext, WeightingMethod, register
from pmtrec_lab.mtl.params import MethodParams

__all__ = ["FAMO", "FAMOParams"]

_EPS = 1e-8  # as in the official implementation


class FAMOParams(MethodParams):
    """FAMO's hyper-parameters (Liu et al., NeurIPS 2023; defaults of the official code)."""

    gamma: float = Field(1e-3, ge=0, description="weight decay gamma of the task logits xi (Adam's)")
    w_lr: float = Field(
        0.025, gt=0, description="Adam learning rate of the task logits xi (the paper's beta)"
    )
    min_losses: float | list[float] = Field(
        0.0,
        description="lower bounds L_k^* of the losses in log(L_k - L_k^*): one float for every task "
        "or one per task",
    )

    @field_validator("min_losses", mode="before")
    @classmethod
    def _tuple_as_list(cls, value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value


@register
class FAMO(WeightingMethod):
    """FAMO (Liu et al., NeurIPS 2023). Parameters: ``FAMOParams`` (``min_losses``, if a list,
    has one entry per task).

    Needs ``after_step`` with the losses on the same batch after the update.
    State: logits, their Adam state and the losses of the pending step.
    """

    name = "famo"
    summary: ClassVar[str] = (
        "FAMO (Liu et al., NeurIPS 2023): learnable weights that balance the log-losses' decrease"
    )
    Params: ClassVar[type[MethodParams]] = FAMOParams
    hparams: FAMOParams
    NEEDS: ClassVar[frozenset[Need]] = frozenset({Need.LOSSES_AFTER})

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        p = self.hparams
        self.min_losses = torch.tensor(per_task_values(self.name, "min_losses", p.min_losses, num_tasks))
        self._xi = LearnableTaskVector(
            self.name, "logits", torch.zeros(num_tasks), lr=p.w_lr, weight_decay=p.gamma
        )
        self._prev_losses: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        """The learnable task logits xi [K] (the optimizer's parameter)."""
        return self._xi.param

    def weights(self) -> torch.Tensor:
        """Current task weights z = softmax(xi) [K] (sum 1, detached)."""
        return torch.softmax(self._xi.value, dim=0)

    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        if self._xi.device != grads.device:
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
        self._xi.step(z * (delta - (z * delta).sum()))  # J_softmax^T delta
        self._prev_losses = None

    def parameters(self) -> list[torch.Tensor]:
        return [self._xi.param]

    def to(self, device: torch.device | str) -> FAMO:
        self._xi.to(device)
        self.min_losses = self.min_losses.to(device)
        if self._prev_losses is not None:
            self._prev_losses = self._prev_losses.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self._xi.state_dict(prev_losses=self._prev_losses)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._prev_losses = self._xi.load_state_dict(state, extra=("prev_losses",))["prev_losses"]
