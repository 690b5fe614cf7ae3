"""Dynamic Weight Average (DWA): Liu, Johns and Davison, "End-to-End Multi-Task Learning with
Attention", CVPR 2019.

Weights for epoch t: ``lambda_k(t) = K * softmax_k(w_k(t-1) / T)`` with the loss ratio
``w_k(t-1) = L_k(t-1) / L_k(t-2)`` of each task's mean training loss over the two previous
epochs; temperature T = 2; equal weights (1) for the first two epochs. A task whose loss
decreases more slowly gets more weight. Uses the trainer's ``on_epoch_end`` hook.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from pmtrec_lab.mtl._checks import check_state_keys
from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl.base import CombineResult, WeightingMethod, register
from pmtrec_lab.mtl.params import MethodParams

__all__ = ["DWAParams", "DynamicWeightAverage"]


class DWAParams(MethodParams):
    """DWA's hyper-parameters (Liu et al., CVPR 2019)."""

    temperature: float = Field(
        2.0, gt=0, description="softmax temperature T over the loss ratios w_k(t-1) (the paper's T = 2)"
    )


@register
class DynamicWeightAverage(WeightingMethod):
    """DWA (Liu et al., CVPR 2019). Parameters: ``DWAParams``.

    State: the mean losses of the last two finished epochs.
    """

    name = "dwa"
    summary: ClassVar[str] = "DWA (Liu et al., CVPR 2019): weights from the rate of each loss's decrease"
    Params: ClassVar[type[MethodParams]] = DWAParams
    hparams: DWAParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        self._history = torch.zeros(0, num_tasks, dtype=torch.float64)  # [<=2, K], oldest first
        self._cache: torch.Tensor | None = None  # weights on the step's device (one copy per epoch)

    def weights(self) -> torch.Tensor:
        """Weights for the current epoch [K] (sum K), float64 on CPU."""
        k = self.num_tasks
        if self._history.shape[0] < 2:
            return torch.ones(k, dtype=torch.float64)
        prev, last = self._history[0], self._history[1]
        ratio = last / prev.clamp_min(torch.finfo(prev.dtype).tiny)
        return k * torch.softmax(ratio / self.hparams.temperature, dim=0)

    def on_epoch_end(self, mean_losses: torch.Tensor, epoch: int) -> None:
        losses = torch.as_tensor(mean_losses).detach().to("cpu", torch.float64).reshape(1, -1)
        if losses.shape[1] != self.num_tasks:
            raise ValueError(f"dwa: expected {self.num_tasks} mean losses, got {losses.shape[1]}")
        self._history = torch.cat([self._history, losses])[-2:]
        self._cache = None

    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        if self._cache is None or self._cache.device != grads.device or self._cache.dtype != grads.dtype:
            self._cache = self.weights().to(grads.device, grads.dtype)
        w = self._cache
        return CombineResult(
            combined=combine_rows(w, grads),
            head_weights=w,
            diagnostics={"task_weights": w.clone()},
        )

    def state_dict(self) -> dict[str, Any]:
        return {"history": self._history.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_keys(self.name, state, ("history",))
        h = torch.as_tensor(state["history"]).to("cpu", torch.float64)
        if h.dim() != 2 or h.shape[1] != self.num_tasks or h.shape[0] > 2:
            raise ValueError(f"dwa: history must be [<=2, {self.num_tasks}], got {tuple(h.shape)}")
        self._history = h.clone()
        self._cache = None
