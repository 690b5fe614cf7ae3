"""Single-task training: the main task alone (the reference every multi-task method must beat).

Not a multi-task method from a paper: auxiliary tasks are computed (so the step is comparable)
but receive weight 0, both on the representations and on their heads.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from pmtrec_lab.mtl.base import CombineResult, StepContext, WeightingMethod, register

__all__ = ["SingleTask"]


@register
class SingleTask(WeightingMethod):
    """Main task only: ``combined = grads[main]``; head weights 1 for the main task, 0 others.

    The main task is ``ctx.main_task``. No hyper-parameters, no state.
    """

    name: ClassVar[str] = "single-task"

    def combine(
        self,
        grads: torch.Tensor,
        active: torch.Tensor,
        side: torch.Tensor,
        losses: torch.Tensor,
        ctx: StepContext,
    ) -> CombineResult:
        k = grads.shape[0]
        main = ctx.main_task
        if not 0 <= main < k:
            raise ValueError(f"single-task: ctx.main_task={main} out of range for {k} tasks")
        head = torch.zeros(k, dtype=grads.dtype, device=grads.device)
        head[main] = 1.0
        return CombineResult(
            combined=grads[main].detach().clone(),
            head_weights=head,
            diagnostics={"task_weights": head.clone()},
        )
