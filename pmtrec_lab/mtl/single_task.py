"""Single-task training: the main task alone (the reference every multi-task method must beat).

Not a multi-task method from a paper: auxiliary tasks are computed (so the step is comparable)
but receive weight 0, both on the representations and on their heads.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from pmtrec_lab.mtl.base import CombineResult, WeightingMethod, register
from pmtrec_lab.mtl.params import MAIN_TASK

__all__ = ["SingleTask"]


@register
class SingleTask(WeightingMethod):
    """Main task only: ``combined = grads[main]``; head weights 1 for the main task, 0 others.

    The main task is task 0 (``params.MAIN_TASK``). No hyper-parameters, no state.
    """

    name = "single-task"
    summary: ClassVar[str] = "Main task only (no auxiliary task updates the representations)"
    TRAINS_AUXILIARY: ClassVar[bool] = False  # so no auxiliary-task metric is reported

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k = grads.shape[0]
        head = torch.zeros(k, dtype=grads.dtype, device=grads.device)
        head[MAIN_TASK] = 1.0
        return CombineResult(
            combined=grads[MAIN_TASK].detach().clone(),
            head_weights=head,
            diagnostics={"task_weights": head.clone()},
        )
