"""Static lambda: the main task with weight 1 and every auxiliary task with one fixed weight.

The update is that of ``L_0 + sum_{k >= 1} lambda_k L_k`` with constant ``lambda_k`` (the
``weight`` parameter, optionally overridden per task by ``task_weights``). It is the static
scalarization that two studies found as strong as the dedicated multi-task optimizers once its
weights and the learning rate are tuned:

- Xin, Ghorbani, Garg, Firat, Gilmer, "Do Current Multi-Task Optimization Methods in Deep
  Learning Even Help?", NeurIPS 2022;
- Kurin, De Palma, Kostrikov, Whiteson, Kumar, "In Defense of the Unitary Scalarization for
  Deep Multi-Task Learning", NeurIPS 2022 (arXiv 2201.04122).

Here the main task is the one that matters (task 0, ``params.MAIN_TASK``) and the auxiliary
tasks only help it, so one number lambda, shared by all auxiliary tasks, is the baseline's
single knob: ``weight = 1`` is EW, ``weight = 0`` is single-task training (bit for bit: tasks
with weight 0 are skipped, not multiplied by zero). The intended grid is
``weight in {0, 0.03, 0.1, 0.3, 1}``, chosen on validation data at the learning rate chosen for
EW (so the comparison tunes lambda, not the optimizer, as in the two papers' protocol).

Task heads (label classifiers) follow the same weights: ``head_weights[k] = lambda_k`` (1 for
the main task), so the run is exactly the gradient of the weighted sum of the losses.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field, field_validator

from pmtrec_lab.mtl.base import CombineResult, WeightingMethod, register
from pmtrec_lab.mtl.params import MAIN_TASK, MethodParams, MethodParamsError

__all__ = ["WEIGHT_GRID", "StaticLambda", "StaticLambdaParams"]

#: the grid of ``weight`` the baseline is tuned over (on validation data, at EW's learning rate)
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0)


class StaticLambdaParams(MethodParams):
    """Static-lambda hyper-parameters (Xin et al., NeurIPS 2022; Kurin et al., NeurIPS 2022).

    ``weight`` is lambda, the weight of every auxiliary task (default 1.0: EW; 0: single-task
    training); tune it over ``WEIGHT_GRID`` = {0, 0.03, 0.1, 0.3, 1} on validation data at
    EW's chosen learning rate. ``task_weights`` maps auxiliary task names (as the run names
    them: ``social:trust``, ``item_label:category``, ...) to a weight that replaces ``weight``
    for that task. Task names are only known once the run's tasks are built, so a name that is
    not among them (or is the main task's) is refused at the first step, naming it and the
    run's tasks (``StaticLambda.task_weight_list``).
    """

    weight: float = Field(
        1.0,
        ge=0,
        description="lambda, the weight of every auxiliary task (main task: 1); 1 = EW, 0 = single-task; "
        "grid {0, 0.03, 0.1, 0.3, 1} on validation data at EW's learning rate",
    )
    task_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="auxiliary task name -> its weight, replacing weight for that task (names are "
        "checked against the run's tasks at the first step)",
    )

    @field_validator("task_weights")
    @classmethod
    def _names_not_blank(cls, value: dict[str, float]) -> dict[str, float]:
        blank = [name for name in value if not name.strip()]
        if blank:
            raise ValueError(f"task names must not be blank, got {blank!r}")
        return value


@register
class StaticLambda(WeightingMethod):
    """Static lambda (Xin et al. and Kurin et al., NeurIPS 2022): the main task with weight 1,
    every auxiliary task with one fixed weight lambda (``weight``) or its own
    (``task_weights``). Parameters: ``StaticLambdaParams``.

    ``combined = g^0 + sum_{k >= 1, lambda_k != 0} lambda_k g^k`` on every entity; tasks with
    weight 0 are skipped, so ``weight = 0`` gives exactly the ``single-task`` update.
    ``head_weights = (1, lambda_1, ..., lambda_{K-1})``. No state. Diagnostics:
    ``task_weights`` [K] (the weights, as the loss-weighting methods report theirs).
    """

    name = "static-lambda"
    summary: ClassVar[str] = (
        "Static lambda (Xin et al.; Kurin et al., NeurIPS 2022): main task 1, every auxiliary task "
        "one fixed weight"
    )
    Params: ClassVar[type[MethodParams]] = StaticLambdaParams
    hparams: StaticLambdaParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        # task names -> resolved weights (checked once per task list, not every step)
        self._resolved: tuple[tuple[str, ...], list[float]] | None = None
        self._head: torch.Tensor | None = None

    def task_weight_list(self, task_names: list[str] | tuple[str, ...]) -> list[float]:
        """One weight per task, in the run's task order: 1 for the main task, then ``weight`` or
        the task's entry in ``task_weights``.

        Raises ``MethodParamsError`` (a ``ValueError``) naming ``method.params.task_weights``, the
        offending names and the run's tasks when a name in ``task_weights`` is not a task of the
        run or is the main task's (whose weight is always 1). Without ``task_weights`` the names
        are not needed.
        """
        names = tuple(task_names)
        if self._resolved is not None and self._resolved[0] == names:
            return self._resolved[1]
        per_task = self.hparams.task_weights
        weights = [1.0] + [float(self.hparams.weight)] * (self.num_tasks - 1)
        if per_task:
            if len(names) != self.num_tasks:
                got = f"got {len(names)} task names {list(names)}"
                raise ValueError(f"{self.name}: built for {self.num_tasks} tasks, {got}")
            known = ", ".join(f"{n!r}" + (" (main)" if i == MAIN_TASK else "") for i, n in enumerate(names))
            main = names[MAIN_TASK]
            if main in per_task:
                raise MethodParamsError(
                    self.name,
                    f"method {self.name!r}: method.params.task_weights: {main!r} is the main task, whose "
                    f"weight is always 1; give weights for auxiliary tasks only (this run's tasks: {known})",
                    ("task_weights",),
                )
            unknown = sorted(set(per_task) - set(names))
            if unknown:
                what = "unknown task" + ("s" if len(unknown) > 1 else "")
                raise MethodParamsError(
                    self.name,
                    f"method {self.name!r}: method.params.task_weights: {what} "
                    f"{', '.join(map(repr, unknown))} (this run's tasks: {known})",
                    ("task_weights",),
                )
            index = {n: i for i, n in enumerate(names)}
            for task, w in per_task.items():
                weights[index[task]] = float(w)
        self._resolved = (names, weights)
        self._head = None
        return weights

    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        weights = self.task_weight_list(ctx.task_names)
        combined = grads[MAIN_TASK].detach().clone()
        for k, w in enumerate(weights):
            if k != MAIN_TASK and w != 0.0:
                combined.add_(grads[k], alpha=w)
        head = self._head
        if head is None or head.dtype != grads.dtype or head.device != grads.device:
            head = self._head = torch.tensor(weights, dtype=grads.dtype, device=grads.device)
        return CombineResult(
            combined=combined,
            head_weights=head.clone(),
            diagnostics={"task_weights": head.clone()},
        )
