"""GradNorm: Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.

Learnable task weights w_k (start at 1, renormalized to sum K after every update). With
``G_k = ||w_k grad L_k||`` (here: the norm of task k's whole representation-gradient block of
the step, the analogue of the paper's last shared layer), ``G_bar = mean_k G_k``, the
relative inverse training rate ``r_k = (L_k / L_k(0)) / mean_j (L_j / L_j(0))`` (L_k(0): the
losses of the first step, as in the paper), GradNorm minimizes
``sum_k |G_k - G_bar * r_k^alpha|`` over w with the target term held constant; alpha = 1.5.
The update uses the current weights; then w takes one step of its own Adam optimizer
(``lr``, default 2e-3: LibMTL trains w with the model's optimizer; 2e-3 is the project's MF
learning rate). Since G_k = w_k ||grad L_k||, the gradient of the GradNorm loss with respect
to w_k is analytic: ``sign(G_k - target_k) * ||grad L_k||``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl._learnable import LearnableTaskVector
from pmtrec_lab.mtl.base import CombineResult, WeightingMethod, register
from pmtrec_lab.mtl.params import MethodParams

__all__ = ["GradNorm", "GradNormParams"]


class GradNormParams(MethodParams):
    """GradNorm's hyper-parameters (Chen et al., ICML 2018)."""

    alpha: float = Field(
        1.5, ge=0, description="asymmetry alpha: the target norm is G_bar * r_k^alpha (the paper's alpha)"
    )
    lr: float = Field(2e-3, gt=0, description="Adam learning rate of the task weights w_k")
    min_weight: float = Field(
        1e-4, gt=0, description="floor on each w_k before the renormalization to sum K (keeps w_k > 0)"
    )


@register
class GradNorm(WeightingMethod):
    """GradNorm (Chen et al., ICML 2018). Parameters: ``GradNormParams``.

    State: the weights, their Adam state and the initial losses L(0).
    """

    name = "gradnorm"
    summary: ClassVar[str] = (
        "GradNorm (Chen et al., ICML 2018): learnable weights balancing gradient norms and training rates"
    )
    Params: ClassVar[type[MethodParams]] = GradNormParams
    hparams: GradNormParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        self._w = LearnableTaskVector(self.name, "task_weights", torch.ones(num_tasks), lr=self.hparams.lr)
        self._initial_losses: torch.Tensor | None = None

    @property
    def task_weights(self) -> torch.Tensor:
        """The learnable task weights w [K] (the optimizer's parameter)."""
        return self._w.param

    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k = grads.shape[0]
        if self._w.device != grads.device:
            self.to(grads.device)
        w = self._w.value.clone()
        w_g = w.to(grads.dtype)
        combined = combine_rows(w_g, grads)

        losses = losses.detach().to(w)
        if self._initial_losses is None:
            self._initial_losses = losses.clone()
        tiny = torch.finfo(w.dtype).tiny
        norms = torch.linalg.vector_norm(grads.reshape(k, -1), dim=1).to(w)  # ||grad L_k||
        g_w = w * norms  # G_k
        rate = losses / self._initial_losses.to(losses.device).clamp_min(tiny)
        rel = rate / rate.mean().clamp_min(tiny)
        target = g_w.mean() * rel.pow(self.hparams.alpha)  # held constant
        self._w.step(torch.sign(g_w - target) * norms)
        param = self._w.param
        new = param.data.clamp_min(self.hparams.min_weight)
        param.data = new * (k / new.sum())
        return CombineResult(
            combined=combined,
            head_weights=w_g,
            diagnostics={"task_weights": w_g.clone(), "gradnorm_target": target.to(grads.dtype)},
        )

    def parameters(self) -> list[torch.Tensor]:
        return [self._w.param]

    def to(self, device: torch.device | str) -> GradNorm:
        self._w.to(device)
        if self._initial_losses is not None:
            self._initial_losses = self._initial_losses.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self._w.state_dict(initial_losses=self._initial_losses)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._initial_losses = self._w.load_state_dict(state, extra=("initial_losses",))["initial_losses"]
