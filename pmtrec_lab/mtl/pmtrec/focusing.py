"""Step 5, Task Focusing, and 5', focusing everywhere (``docs/pmtrec-method.md``, "The step", 5,
and "The v3 step", 5').

5b. The schedule (``schedule``, ``beta_max``, ``horizon``): beta(t) grows from 0 to ``beta_max``
    over ``horizon`` (fractional) epochs, linear or cosine, and raises the main task's logit in
    step 4's weights. Its stage (``Schedule``) runs before the weights (4), which read it.
5a. Alignment (``align``): for every auxiliary k with <gb_x^k, g_x^0> < 0, the component of gb_x^k
    along g_x^0 is projected out, for entities that have a main-task gradient. GMB scales do not
    change directions, so the projection coefficients p = min(<g^k, g^0>, 0) / ||g^0||^2 come from
    the raw Gramian; the combination (step 6) applies them to its coefficients.
5'. Focusing everywhere (``focus_everywhere``): the same projection against the entity's memory
    ref_x where the step has no g_x^0 (A'_x; the schedule reaches those rows through step 4).
"""

from __future__ import annotations

import math

import torch

from pmtrec_lab.mtl._gram import conflict_projection
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["SCHEDULES", "Focusing", "Schedule", "schedule_beta"]

SCHEDULES = ("none", "linear", "cosine")


def schedule_beta(t: float, schedule: str, beta_max: float, horizon: float) -> float:
    """Task Focusing schedule beta(t) at fractional epoch ``t`` (spec step 5b).

    ``none``: 0; ``linear``: beta_max * min(t / H, 1); ``cosine``:
    beta_max * (1 - cos(pi * min(t / H, 1))) / 2. Negative t counts as 0.
    """
    if schedule == "none":
        return 0.0
    frac = min(max(float(t), 0.0) / horizon, 1.0)
    if schedule == "linear":
        return beta_max * frac
    if schedule == "cosine":
        return beta_max * (1.0 - math.cos(math.pi * frac)) / 2.0
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


class Schedule(Stage):
    """beta(t) at the step's fractional epoch (a host float: no sync). Diagnostics: ``beta``
    (a CPU float64 scalar)."""

    step = "5b"
    reads = ("schedule", "beta_max", "horizon")

    def run(self, s: PMTRecStep) -> None:
        s.beta = schedule_beta(s.ctx.fractional_epoch, self.p.schedule, self.p.beta_max, self.p.horizon)
        s.diagnostics["beta"] = torch.tensor(s.beta, dtype=torch.float64)


class Focusing(Stage):
    """Alignment's projection coefficients (against g^0, and against ref_x on A'_x), and where
    focusing reaches.

    Diagnostics: ``conflict_fraction`` [K] (among entities touched by k that have a main-task
    gradient, the fraction with cos(g^k, g^0) < 0: where alignment fires); ``cos_main`` [E, K]
    (NaN where task k or the main task did not touch the entity); ``cos_main_after`` [E, K] (the
    same after alignment: >= 0 where aligned; ``cos_main`` with ``align=False``); ``focus_share``
    [K] (share of task k's touched rows that focusing reaches: a main gradient, or with
    ``focus_everywhere`` a memory).
    """

    step = "5a, 5'"
    reads = ("align",)

    def run(self, s: PMTRecStep) -> None:
        main, has_main = MAIN_TASK, s.has_main
        if self.p.align:
            # gb^k -> gb^k - (<gb^k, g^0>/||g^0||^2) g^0 where negative: adds to g^0's coefficient.
            s.proj = conflict_projection(s.inner, main, has_main)
            if s.virtual is not None:  # the same against the memory where the step has no g^0
                assert s.ref is not None
                inner_ref = torch.einsum("ked,ed->ke", s.grads, s.ref)
                inner_ref[main] = (s.ref * s.ref).sum(dim=1)
                s.proj_ref = conflict_projection(inner_ref, main, s.virtual)
        reach = has_main if s.virtual is None else has_main | s.virtual
        act, norms = s.act, s.norms
        both = act * act[main]  # 1 where task k and the main task touched the entity, else 0
        cos = s.inner / (norms * norms[main]).clamp_min(s.tiny)
        # NaN where undefined without a bool-mask kernel (slow on CPU): x * 1 / 1 = x exactly,
        # x * 0 / 0 = NaN.
        cos = cos.mul_(both).div_(both)
        # After alignment a conflicting g^k becomes orthogonal to g^0 (cosine 0) and the others
        # are unchanged (GMB scales do not change directions): cos_after = max(cos, 0), NaN kept.
        cos_after = cos if s.proj is None else cos.clamp_min(0)
        s.diagnostics["conflict_fraction"] = (cos < 0).sum(dim=1).to(s.dtype) / both.sum(dim=1).clamp_min(1)
        s.diagnostics["cos_main"] = cos.T
        s.diagnostics["cos_main_after"] = cos_after.T
        s.diagnostics["focus_share"] = (act * reach.to(s.dtype)).sum(dim=1) / act.sum(dim=1).clamp_min(1)
