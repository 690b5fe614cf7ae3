"""Step 3'', usefulness scales from the meta loss (``docs/pmtrec-method.md``, "The v3 step", 3'').

lambda_{k,s} in [0, lambda_max], initial 1, one per (auxiliary task, side); the main task's stays
1. A harmful task falls towards 0 (single-task training), a helpful one keeps its strength. Two
of the document's candidates are here, one stage each (``usefulness`` picks one):

- (a) first-order (``usefulness="meta_cos"``): lambda += usefulness_lr * the mean, over side s's
  rows touched by task k and the meta loss, of cos(g_meta,x, g_x^k); updated before use, clipped
  to [0, lambda_max];
- (c) an outer loop on the meta loss's value (``usefulness="meta_spsa"``): simultaneous
  perturbation over windows of ``spsa_every`` steps (``meta_spsa.MetaLossSPSA``); the trainer
  evaluates the meta loss at each window boundary (``observe_meta_loss``).

Candidate (d), per-task second moments, is ``moments.MomentBalance``; (b) is not built (see the
document). The scales are factors of the combination's coefficients (step 6).
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl._gram import side_table
from pmtrec_lab.mtl.base import Need, StepContext
from pmtrec_lab.mtl.pmtrec.meta_spsa import MetaLossSPSA
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, NUM_SIDES, PMTRecStep, Stage

__all__ = ["MetaCosUsefulness", "SPSAUsefulness"]


def _on_touched_sides(s: PMTRecStep, lam: torch.Tensor) -> torch.Tensor:
    """``lam`` [2, K] where the task touched the side in this step, NaN elsewhere (a diagnostic)."""
    touched = (s.act @ s.onehot).T > 0  # [2, K]
    return torch.where(touched, lam, torch.full_like(lam, float("nan")))


class MetaCosUsefulness(Stage):
    """Candidate (a). State: lambda [2, K]. Diagnostics: ``usefulness_scale`` [2, K] (NaN where the
    task did not touch the side in this step) and ``meta_cos`` [2, K] (the batch mean cosines,
    NaN where no row qualifies)."""

    step = "3'' (a)"
    reads = ("usefulness", "usefulness_lr", "lambda_max")
    switches = ("usefulness",)
    state_keys = ("usefulness_scale",)
    state_name = "meta_cos usefulness scales"
    needs = frozenset({Need.META_GRADIENTS})

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        self.lam = torch.ones(NUM_SIDES, num_tasks)

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.usefulness == "meta_cos"

    def run(self, s: PMTRecStep) -> None:
        cos, both = s.meta_cosines(f"usefulness={self.p.usefulness!r}")
        n = both @ s.onehot  # [K, 2]
        mean = ((cos @ s.onehot) / n.clamp_min(1)).T  # [2, K]
        lam = self.lam.to(device=cos.device, dtype=cos.dtype)
        lam = torch.where(n.T > 0, lam + self.p.usefulness_lr * mean, lam).clamp(0.0, self.p.lambda_max)
        lam[:, MAIN_TASK] = 1.0
        self.lam = lam
        s.factors.append(side_table(lam, s.is_item))
        s.diagnostics["usefulness_scale"] = _on_touched_sides(s, lam)
        s.diagnostics["meta_cos"] = torch.where(n.T > 0, mean, torch.full_like(mean, float("nan")))

    def state_dict(self) -> dict[str, Any]:
        return {"usefulness_scale": self.lam.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        lam = torch.as_tensor(state["usefulness_scale"])
        if tuple(lam.shape) != (NUM_SIDES, self.num_tasks):
            raise ValueError(f"pmtrec: usefulness scales must be {(NUM_SIDES, self.num_tasks)}")
        self.lam = lam.clone()

    def to(self, device: torch.device | str) -> None:
        self.lam = self.lam.to(device)


class SPSAUsefulness(Stage):
    """Candidate (c): this window's scales exp(theta + eps * pattern * s). State: the estimator's
    (``MetaLossSPSA``, kept on the CPU). Diagnostics: ``usefulness_scale`` [2, K] (exp(theta), NaN
    where the task did not touch the side in this step)."""

    step = "3'' (c)"
    reads = ("usefulness", "spsa_every", "spsa_eps", "spsa_lr", "lambda_max")
    switches = ("usefulness",)
    state_keys = ("usefulness_spsa",)
    state_name = "SPSA usefulness scales"
    needs = frozenset({Need.META_LOSS})  # every meta_value_every (= spsa_every) steps

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        self.spsa = MetaLossSPSA(NUM_SIDES, num_tasks, p.spsa_eps, p.spsa_lr, p.lambda_max)

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.usefulness == "meta_spsa"

    @property
    def meta_value_every(self) -> int | None:
        return self.p.spsa_every

    def observe_meta_loss(self, value: float, ctx: StepContext) -> None:
        self.spsa.observe(value, ctx.generator)

    def run(self, s: PMTRecStep) -> None:
        self.spsa.mark_touched((s.act @ s.onehot).T > 0)
        lam = self.spsa.center().to(device=s.grads.device, dtype=s.dtype)
        s.factors.append(side_table(self.spsa.applied().to(device=s.grads.device, dtype=s.dtype), s.is_item))
        s.diagnostics["usefulness_scale"] = _on_touched_sides(s, lam)

    def state_dict(self) -> dict[str, Any]:
        return {"usefulness_spsa": self.spsa.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spsa.load_state_dict(state["usefulness_spsa"])
