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

from typing import Any, ClassVar

import torch

from pmtrec_lab.mtl._gram import combine_rows, side_onehot, side_table
from pmtrec_lab.mtl.base import CombineResult, StepContext, WeightingMethod, register
from pmtrec_lab.mtl.uncertainty import check_positive

__all__ = ["MetaBalance"]

_STRATEGIES = ("adapt", "reduce", "enlarge")
_NUM_SIDES = 2


@register
class MetaBalance(WeightingMethod):
    """MetaBalance (He et al., WWW 2022). Parameters: ``relax`` r (default 0.7), ``beta``
    (moving-average decay, default 0.9), ``strategy`` (default ``"adapt"``).

    The main task is ``ctx.main_task``. State: the per-(side, task) moving averages.
    Diagnostics: ``norm_ratio_before`` / ``norm_ratio_after`` [2, K] (m^{k,s}/m^{0,s} before
    and after the rescaling; NaN where undefined).
    """

    name: ClassVar[str] = "metabalance"

    def __init__(
        self,
        num_tasks: int,
        relax: float = 0.7,
        beta: float = 0.9,
        strategy: str = "adapt",
        **params: Any,
    ):
        super().__init__(num_tasks, **params)
        self.relax = check_positive(self.name, "relax", relax, allow_zero=True)
        if self.relax > 1:
            raise ValueError(f"method 'metabalance': relax must be in [0, 1], got {relax!r}")
        self.beta = check_positive(self.name, "beta", beta, allow_zero=True)
        if self.beta >= 1:
            raise ValueError(f"method 'metabalance': beta must be in [0, 1), got {beta!r}")
        if strategy not in _STRATEGIES:
            raise ValueError(f"method 'metabalance': strategy must be one of {_STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self._magnitude = torch.zeros(_NUM_SIDES, num_tasks)
        self._initialized = torch.zeros(_NUM_SIDES, num_tasks, dtype=torch.bool)

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
        main = ctx.main_task
        side = side.long()
        onehot = side_onehot(side, grads.dtype, _NUM_SIDES)  # [E, 2]
        block_norm = ((grads * grads).sum(-1) @ onehot).clamp_min(0).sqrt().T  # [2, K]
        touched = (active.to(grads.dtype).T @ onehot).T > 0  # [2, K]
        m_old = self._magnitude.to(grads.device, grads.dtype)
        init_old = self._initialized.to(grads.device)
        ema = self.beta * m_old + (1 - self.beta) * block_norm
        m = torch.where(touched, torch.where(init_old, ema, block_norm), m_old)
        init = init_old | touched
        self._magnitude, self._initialized = m, init

        tiny = torch.finfo(grads.dtype).tiny
        m0 = m[:, main : main + 1]
        defined = init & init[:, main : main + 1] & (m > 0) & (m0 > 0)
        factor = self.relax * m0 / m.clamp_min(tiny) + (1 - self.relax)
        if self.strategy == "reduce":
            defined = defined & (m > m0)
        elif self.strategy == "enlarge":
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
        return {"magnitude": self._magnitude.clone(), "initialized": self._initialized.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"magnitude", "initialized"}:
            raise ValueError(
                f"metabalance state must have keys ['initialized', 'magnitude'], got {sorted(state)}"
            )
        mag = torch.as_tensor(state["magnitude"])
        init = torch.as_tensor(state["initialized"]).bool()
        shape = (_NUM_SIDES, self.num_tasks)
        if tuple(mag.shape) != shape or tuple(init.shape) != shape:
            raise ValueError(f"metabalance state tensors must be {shape}")
        self._magnitude, self._initialized = mag.clone(), init.clone()

    def to(self, device: torch.device | str) -> MetaBalance:
        self._magnitude = self._magnitude.to(device)
        self._initialized = self._initialized.to(device)
        return self
