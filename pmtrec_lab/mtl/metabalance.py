"""MetaBalance: He, Feng, Cheng, Lin, Li, Zhang and Caverlee, "MetaBalance: Improving Multi-Task
Recommendations via Adapting Gradient Magnitudes of Auxiliary Tasks", WWW 2022.

For every shared parameter tensor, MetaBalance keeps a moving average (beta = 0.9) of the norm
of each task's gradient and rescales every auxiliary gradient towards the main task's
magnitude: ``g_k <- g_k * (r * m_0 / m_k + (1 - r))`` with relax factor r = 0.7, then adds
them to the main gradient. Strategies: ``"adapt"`` (both directions, the paper's best on most
datasets; the default here), ``"reduce"`` (only where m_k > m_0), ``"enlarge"`` (only where
m_k < m_0).

Here the shared parameters are the two representation blocks of the step, users and items (for
MF exactly the gradients of the two embedding tables restricted to the touched rows): m^{k,s}
is the moving average of the Frobenius norm of task k's gradient block on side s. Averages
start at the first observed value (the paper's zero-initialised averages differ only by a
bias factor common to all tasks, which cancels in m_0 / m_k when every task is present every
step) and a task that touched no entity of a side keeps its value. Task heads keep their own
gradients (head weights 1).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from pmtrec_lab.mtl._gram import combine_rows, side_onehot, side_table
from pmtrec_lab.mtl._magnitude import SideMagnitudeEMA
from pmtrec_lab.mtl.base import CombineResult, WeightingMethod, register
from pmtrec_lab.mtl.params import MAIN_TASK, MethodParams

__all__ = ["MetaBalance", "MetaBalanceParams"]

_NUM_SIDES = 2


class MetaBalanceParams(MethodParams):
    """MetaBalance's hyper-parameters (He et al., WWW 2022; the paper's defaults)."""

    relax: float = Field(
        0.7, ge=0, le=1, description="relax factor r in g_k * (r m_0 / m_k + (1 - r)); 0 = no rescaling"
    )
    beta: float = Field(
        0.9, ge=0, lt=1, description="decay beta of the moving averages m_k of the gradient norms"
    )
    strategy: Literal["adapt", "reduce", "enlarge"] = Field(
        "adapt",
        description="rescale auxiliary gradients both ways ('adapt'), only where m_k > m_0 "
        "('reduce') or only where m_k < m_0 ('enlarge')",
    )


@register
class MetaBalance(WeightingMethod):
    """MetaBalance (He et al., WWW 2022). Parameters: ``MetaBalanceParams``.

    The main task is task 0. State: the per-(side, task) moving averages
    (``_magnitude.SideMagnitudeEMA`` of the block norms).
    Diagnostics: ``norm_ratio_before`` / ``norm_ratio_after`` [2, K] (m^{k,s}/m^{0,s} before
    and after the rescaling; NaN where undefined).
    """

    name = "metabalance"
    summary: ClassVar[str] = (
        "MetaBalance (He et al., WWW 2022): auxiliary gradient norms pulled towards the main task's"
    )
    Params: ClassVar[type[MethodParams]] = MetaBalanceParams
    hparams: MetaBalanceParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        self._ema = SideMagnitudeEMA(_NUM_SIDES, num_tasks, self.hparams.beta, owner=self.name)

    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k = grads.shape[0]
        main = MAIN_TASK
        relax, strategy = self.hparams.relax, self.hparams.strategy
        side = side.long()
        onehot = side_onehot(side, grads.dtype, _NUM_SIDES)  # [E, 2]
        block_norm = ((grads * grads).sum(-1) @ onehot).clamp_min(0).sqrt().T  # [2, K]
        touched = (active.to(grads.dtype).T @ onehot).T > 0  # [2, K]
        m = self._ema.update_values(block_norm, touched)
        init = self._ema.initialized

        tiny = torch.finfo(grads.dtype).tiny
        m0 = m[:, main : main + 1]
        defined = init & init[:, main : main + 1] & (m > 0) & (m0 > 0)
        factor = relax * m0 / m.clamp_min(tiny) + (1 - relax)
        if strategy == "reduce":
            defined = defined & (m > m0)
        elif strategy == "enlarge":
            defined = defined & (m < m0)
        factor = torch.where(defined, factor, torch.ones_like(factor))
        factor[:, main] = 1.0
        combined = combine_rows(side_table(factor, side == 1), grads)

        nan = torch.full_like(m, float("nan"))
        ok = init & init[:, main : main + 1] & (m0 > 0)
        ratio = torch.where(ok, m / m0.clamp_min(tiny), nan)
        return CombineResult(
            combined=combined,
            head_weights=torch.ones(k, dtype=grads.dtype, device=grads.device),
            diagnostics={"norm_ratio_before": ratio, "norm_ratio_after": ratio * factor},
        )

    def state_dict(self) -> dict[str, Any]:
        return self._ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ema.load_state_dict(state)

    def to(self, device: torch.device | str) -> MetaBalance:
        self._ema.to(device)
        return self
