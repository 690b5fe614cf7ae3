"""Gradient Magnitude Balancing (``docs/pmtrec-method.md``, "The step", 3, and "The v3 step", 3').

3. Per (task, side) (``gmb_mode="side"``): gb_x^k = g_x^k ((1 - rho) + rho T^s / m^{k,s}), T^s the
   main task's m^{0,s} (``gmb_target="main"``) or the mean / max over the tasks whose magnitude on
   side s has started. This is MetaBalance's rule (He et al., "MetaBalance: Improving Multi-Task
   Recommendations via Adapting Gradient Magnitudes of Auxiliary Tasks", WWW 2022:
   ``g_aux * (r * ||g_main|| / ||g_aux|| + (1 - r))`` with relax factor r = 0.7 and moving-average
   decay 0.9, its "adapt" strategy). Ours differs in where the magnitudes are measured: MetaBalance
   keeps one moving average of the norm of each task's gradient per shared parameter tensor; here
   m^{k,s} is step 2's moving average of the *mean per-row* norm over the entities of side s that
   task k touched, so the factor is one number per (task, side) applied to every row. ``rho``
   plays the role of MetaBalance's relax factor.
3'. Per entity, reduce-only (``gmb_mode="entity_reduce"``, the v3 default): for auxiliary k,
   f_x^k = (1 - rho) + rho min(1, gmb_c mag_x / n_x^k), and 1 where x has no memory: an auxiliary
   gradient is scaled down, never up, towards gmb_c times the entity's own moving-average
   main-task magnitude (``memory``).

Both are factors of the combination's coefficients (step 6 multiplies them in), since the
gradients themselves are combined once, raw. GMB acts on representation gradients only.
"""

from __future__ import annotations

import torch

from pmtrec_lab.mtl._gram import side_table
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["GMB_TARGETS", "EntityReduceGMB", "SideGMB"]

GMB_TARGETS = ("main", "mean", "max")


class SideGMB(Stage):
    """Step 3's per-(side, task) factor, and GMB's effect on the magnitudes for every configuration.

    Diagnostics: ``norm_ratio_before`` / ``norm_ratio_after`` [2, K] (m^{k,s}/m^{0,s} before and
    after step 3's factor, NaN where a magnitude is undefined; equal where the factor is off).
    """

    step = "3"
    reads = ("gmb_mode", "rho", "gmb_target")

    def run(self, s: PMTRecStep) -> None:
        m = s.magnitude
        scale = self._scale(m, s.initialized) if self.p.gmb_mode == "side" else torch.ones_like(m)
        if self.p.rho > 0 and self.p.gmb_mode == "side":
            s.factors.append(side_table(scale, s.is_item))
        main = MAIN_TASK
        m0 = m[:, main : main + 1]
        init = s.initialized
        defined = init & init[:, main : main + 1] & (m0 > 0)
        nan = torch.full_like(m, float("nan"))
        m_after = m * scale
        s.diagnostics["norm_ratio_before"] = torch.where(defined, m / m0.clamp_min(s.tiny), nan)
        s.diagnostics["norm_ratio_after"] = torch.where(
            defined, m_after / m_after[:, main : main + 1].clamp_min(s.tiny), nan
        )

    def _scale(self, m: torch.Tensor, initialized: torch.Tensor) -> torch.Tensor:
        """Per (side, task) factor ``(1-rho) + rho T^s / m^{k,s}``; 1 where the target or a task's
        magnitude is undefined (never touched) or zero, and everywhere with rho = 0."""
        ones = torch.ones_like(m)
        rho = self.p.rho
        if rho == 0.0:
            return ones
        init = initialized.to(m.device)
        target_mode = self.p.gmb_target
        if target_mode == "main":
            target = m[:, MAIN_TASK]
            has_target = init[:, MAIN_TASK]
        elif target_mode == "mean":
            cnt = init.sum(1)
            target = (m * init).sum(1) / cnt.clamp_min(1)
            has_target = cnt > 0
        else:  # max
            target = m.masked_fill(~init, 0.0).amax(1)
            has_target = init.any(1)
        valid = init & (m > 0) & has_target.unsqueeze(1)
        ratio = target.unsqueeze(1) / m.clamp_min(torch.finfo(m.dtype).tiny)
        return torch.where(valid, (1.0 - rho) + rho * ratio, ones)


class EntityReduceGMB(Stage):
    """Step 3''s per-entity factor f_x^k [K, E] (reads the memory's mag_x).

    Diagnostics: ``gmb_reduce`` [K] (the mean factor over the rows each task touched).
    """

    step = "3'"
    reads = ("gmb_mode", "rho", "gmb_c")

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.gmb_mode == "entity_reduce" and p.rho > 0

    def run(self, s: PMTRecStep) -> None:
        assert s.ref_mag is not None and s.known is not None  # EntityMemory runs with this stage
        norms, rho = s.norms, self.p.rho
        allowed = self.p.gmb_c * s.ref_mag.unsqueeze(0)  # [1, E]
        cut = torch.where(norms > allowed, allowed / norms.clamp_min(s.tiny), torch.ones_like(norms))
        cut = torch.where(s.known.unsqueeze(0), cut, torch.ones_like(cut))
        cut[MAIN_TASK] = 1.0
        scale = (1.0 - rho) + rho * cut
        s.factors.append(scale)
        s.diagnostics["gmb_reduce"] = (scale * s.act).sum(dim=1) / s.act.sum(dim=1).clamp_min(1)
