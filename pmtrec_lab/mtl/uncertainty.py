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

from typing import Any, ClassVar

import torch
from pydantic import Field

from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl._learnable import LearnableTaskVector
from pmtrec_lab.mtl.base import CombineResult, WeightingMethod, register
from pmtrec_lab.mtl.params import MethodParams

__all__ = ["UWParams", "UncertaintyWeighting"]


class UWParams(MethodParams):
    """UW's hyper-parameters (Kendall et al., CVPR 2018)."""

    lr: float = Field(2e-3, gt=0, description="Adam learning rate of the log-variances s_k = log sigma_k^2")
    init_log_var: float = Field(
        0.0, description="initial log-variance s_k of every task (0: weights exp(-s_k) = 1, i.e. EW)"
    )


@register
class UncertaintyWeighting(WeightingMethod):
    """UW (Kendall et al., CVPR 2018): weights exp(-s_k) with learnable log-variances s_k.

    Parameters: ``UWParams``. State: s and its Adam state.
    """

    name = "uw"
    summary: ClassVar[str] = "UW (Kendall et al., CVPR 2018): learnable homoscedastic-uncertainty weights"
    Params: ClassVar[type[MethodParams]] = UWParams
    hparams: UWParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        p = self.hparams
        self._s = LearnableTaskVector(self.name, "log_var", torch.full((num_tasks,), p.init_log_var), lr=p.lr)

    @property
    def log_var(self) -> torch.Tensor:
        """The learnable log-variances s [K] (the optimizer's parameter)."""
        return self._s.param

    def weights(self) -> torch.Tensor:
        """Current task weights exp(-s) [K] (detached)."""
        return torch.exp(-self._s.value)

    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        if self._s.device != grads.device:
            self.to(grads.device)
        w = self.weights()
        combined = combine_rows(w.to(grads.dtype), grads)
        # One Adam step on sum_k exp(-s_k) L_k + s_k.
        self._s.step(1.0 - w * losses.detach().to(w))
        w_out = w.to(grads.dtype)
        return CombineResult(combined=combined, head_weights=w_out, diagnostics={"task_weights": w_out})

    def parameters(self) -> list[torch.Tensor]:
        return [self._s.param]

    def to(self, device: torch.device | str) -> UncertaintyWeighting:
        self._s.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self._s.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._s.load_state_dict(state)
