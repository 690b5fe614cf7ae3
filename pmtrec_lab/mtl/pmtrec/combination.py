"""Step 6, the combination (``docs/pmtrec-method.md``, "The step", 6, and "The v3 step", 6).

G_x = sum over k in A'_x of |A'_x| w_x^k lambda_{k,s(x)} exp(delta_x^k) f_x^k gb_x^k, with
alignment applied to gb (``normalize=True`` drops |A'_x|). An entity without the main task is
combined over the tasks it has. Written as per-(task, entity) coefficients on the raw gradients,
G_x = sum_k coef[k, x] g_x^k (one pass over the [K, E, D] block, ``_gram.combine_rows``):

    coef = |A'_x| w_x^k, times each factor of the earlier stages in the order they ran
           (3: the per-side GMB scale, 3': f_x^k, 3'': lambda, then exp(delta)),
    coef[0] -= sum_k coef[k] p[k]                 (5a: alignment against g^0)
    G_x -= (sum_k coef[k] p_ref[k]) ref_x          (5': against the memory)

The factors multiply in that order, left to right, because it is the order the method always
used (floating-point products do not reassociate; the outputs stay bit for bit).

``head_weights[k]``: the mean, over the entities task k touched, of |A'_x| w_x^k (w_x^k with
``normalize``); GMB, the scales and alignment act on representation gradients only, not heads.
1 for a task that touched no entity this step.
"""

from __future__ import annotations

import torch

from pmtrec_lab.mtl._gram import combine_rows
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["Combination"]


class Combination(Stage):
    """G_x [E, D] and the head weights [K]."""

    step = "6"
    reads = ("normalize",)

    def run(self, s: PMTRecStep) -> None:
        mult = s.w if self.p.normalize else s.w * s.act_w.sum(dim=0)
        coef = mult
        for factor in s.factors:
            coef = coef * factor
        if coef is mult:
            coef = mult.clone()  # alignment below writes into coef; mult is read by the heads
        if s.proj is not None:
            coef[MAIN_TASK] -= (coef * s.proj).sum(dim=0)
        combined = combine_rows(coef, s.grads)
        if s.proj_ref is not None:
            assert s.ref is not None
            combined -= (coef * s.proj_ref).sum(dim=0).unsqueeze(1) * s.ref
        count_k = s.act.sum(dim=1)
        s.combined = combined
        s.head_weights = torch.where(
            count_k > 0, mult.sum(dim=1) / count_k.clamp_min(1), torch.ones_like(count_k)
        )
