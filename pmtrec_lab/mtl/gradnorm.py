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

from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl.base import CombineResult, StepContext, WeightingMethod, register
from pmtrec_lab.mtl.uncertainty import (
    check_positive,
    learnable_state,
    load_learnable_state,
    move_optimizer_state,
)

__all__ = ["GradNorm"]


@register
class GradNorm(WeightingMethod):
    """GradNorm (Chen et al., ICML 2018). Parameters: ``alpha`` (default 1.5), ``lr`` (Adam
    learning rate of the weights, default 2e-3), ``min_weight`` (floor applied before the
    renormalization, default 1e-4, keeps weights positive).

    State: the weights, their Adam state and the initial losses L(0).
    """

    name: ClassVar[str] = "gradnorm"

    def __init__(
        self,
        num_tasks: int,
        alpha: float = 1.5,
        lr: float = 2e-3,
        min_weight: float = 1e-4,
        **params: Any,
    ):
        super().__init__(num_tasks, **params)
        self.alpha = check_positive(self.name, "alpha", alpha, allow_zero=True)
        self.lr = check_positive(self.name, "lr", lr)
        self.min_weight = check_positive(self.name, "min_weight", min_weight)
        self.task_weights = torch.ones(num_tasks, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.task_weights], lr=self.lr)
        self._initial_losses: torch.Tensor | None = None

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
        if self.task_weights.device != grads.device:
            self.to(grads.device)
        w = self.task_weights.detach().clone()
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
        target = g_w.mean() * rel.pow(self.alpha)  # held constant
        self.task_weights.grad = torch.sign(g_w - target) * norms
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        new = self.task_weights.data.clamp_min(self.min_weight)
        self.task_weights.data = new * (k / new.sum())
        return CombineResult(
            combined=combined,
            head_weights=w_g,
            diagnostics={"task_weights": w_g.clone(), "gradnorm_target": target.to(grads.dtype)},
        )

    def parameters(self) -> list[torch.Tensor]:
        return [self.task_weights]

    def to(self, device: torch.device | str) -> GradNorm:
        self.task_weights.data = self.task_weights.data.to(device)
        move_optimizer_state(self.optimizer, device)
        if self._initial_losses is not None:
            self._initial_losses = self._initial_losses.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return learnable_state(
            "task_weights", self.task_weights, self.optimizer, initial_losses=self._initial_losses
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = load_learnable_state(
            self.name, "task_weights", self.task_weights, self.optimizer, state, extra=("initial_losses",)
        )
        self._initial_losses = extra["initial_losses"]
