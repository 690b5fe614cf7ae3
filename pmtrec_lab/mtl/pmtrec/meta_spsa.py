"""PMTRec v3 usefulness candidate (c), its estimator (the stage is ``usefulness.SPSAUsefulness``):
the usefulness scales learned from the meta loss's *value* over windows of steps, by
simultaneous perturbation (SPSA; Spall, "Multivariate stochastic approximation using a
simultaneous perturbation gradient approximation", IEEE TAC 1992).

Why: the first-order signal of candidate (a), cos(g_meta, g^k), measures directions only, and the
issue's measurements show it drifts up on datasets where the auxiliary tasks hurt: what hurts
there is the size of the auxiliary pressure and what Adam's second moments make of it over many
steps. The change of the held-out meta loss across a window of real optimizer steps includes all
of that.

The scales are lambda_{k,s} = exp(theta_{k,s}) over the auxiliary tasks and both sides (the main
task's stays 1). A cycle is four windows of ``every`` steps. At the cycle's start a sign
s_{k,s} in {-1, +1} is drawn per scale whose task has touched that side so far (0 for the
others: they have no effect to measure); the windows apply lambda exp(+eps s), exp(-eps s),
exp(-eps s), exp(+eps s) (the order +--+ cancels a linear trend of the loss over the cycle). At
every window boundary the trainer evaluates the meta loss L on all meta pairs (with negatives
fixed for the run, so L is a function of the model alone). With D_w = L(end of window w) -
L(start of window w):

    d = D_1 - D_2 - D_3 + D_4
    r = d / (|d| + |D_1 - D_4| + |D_2 - D_3|)      in [-1, 1]
    theta <- clip(theta - lr r s, log(floor), log(lambda_max))

r > 0 means the meta loss fared worse where lambda was moved along s, so theta steps along -s.
The denominator compares the effect with the spread between the two windows of the same sign
(noise, and any curvature of the loss over the cycle): r is near +-1 when the effect stands out
and near 0 when it does not, so the update is bounded (|step| <= lr), scale-free (the loss's
units cancel) and damped by noise. It costs one meta-loss evaluation per window.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pmtrec_lab.mtl.params import MAIN_TASK

#: the perturbation sign of each window of a cycle
PATTERN = (1.0, -1.0, -1.0, 1.0)
#: lower bound of the scales (exp space cannot reach 0; 1e-3 switches a task off in effect)
FLOOR = 1e-3


class MetaLossSPSA:
    def __init__(self, num_sides: int, num_tasks: int, eps: float, lr: float, lambda_max: float):
        self.eps, self.lr = eps, lr
        self.low, self.high = math.log(FLOOR), math.log(lambda_max)
        self.theta = torch.zeros(num_sides, num_tasks, dtype=torch.float64)
        self.signs: torch.Tensor | None = None  # [2, K] of the current cycle
        self.window = 0  # index of the current window in PATTERN
        self.start: float | None = None  # meta loss at the current window's start
        self.deltas: list[float] = []
        self.updates = 0
        #: (side, task) pairs whose task has touched that side: only these are perturbed (a
        #: social task never touches items; perturbing its item scale would only add noise)
        self.touched = torch.zeros(num_sides, num_tasks, dtype=torch.bool)

    def mark_touched(self, touched: torch.Tensor) -> None:
        """Record the (side, task) pairs a step touched ([2, K] bool)."""
        self.touched |= touched.detach().to(device="cpu", dtype=torch.bool)

    def observe(self, value: float, generator: torch.Generator) -> None:
        """A window boundary: ``value`` is the meta loss now. Closes the window that ends here
        (updating theta after the fourth) and starts the next one."""
        if not math.isfinite(value):
            raise ValueError(f"meta loss is not finite ({value}); the scales cannot be updated")
        if self.start is not None:
            self.deltas.append(value - self.start)
            self.window += 1
            if self.window == len(PATTERN):
                self._update()
        self.start = value
        if self.signs is None:
            draw = torch.randint(0, 2, tuple(self.theta.shape), generator=generator)
            signs = (2 * draw - 1).to(torch.float64) * self.touched.to(torch.float64)
            signs[:, MAIN_TASK] = 0.0
            self.signs = signs

    def _update(self) -> None:
        assert self.signs is not None
        d1, d2, d3, d4 = self.deltas
        d = d1 - d2 - d3 + d4
        scale = abs(d) + abs(d1 - d4) + abs(d2 - d3)
        r = d / scale if scale > 0 else 0.0
        self.theta = (self.theta - self.lr * r * self.signs).clamp(self.low, self.high)
        self.theta[:, MAIN_TASK] = 0.0
        self.signs, self.window, self.deltas = None, 0, []
        self.updates += 1

    def center(self) -> torch.Tensor:
        """The scales lambda = exp(theta) [2, K] (what the diagnostics record)."""
        return self.theta.exp()

    def applied(self) -> torch.Tensor:
        """The scales of the current window: exp(theta + eps * pattern * s) [2, K]."""
        if self.signs is None:
            return self.center()
        return (self.theta + self.eps * PATTERN[self.window] * self.signs).exp()

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": self.theta.clone(),
            "signs": torch.zeros_like(self.theta) if self.signs is None else self.signs.clone(),
            "has_signs": self.signs is not None,
            "window": self.window,
            "start": float("nan") if self.start is None else self.start,
            "deltas": torch.tensor(self.deltas, dtype=torch.float64),
            "updates": self.updates,
            "touched": self.touched.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        theta = torch.as_tensor(state["theta"], dtype=torch.float64)
        if theta.shape != self.theta.shape:
            raise ValueError(f"SPSA scales must be {tuple(self.theta.shape)}, got {tuple(theta.shape)}")
        self.theta = theta.clone()
        signs = torch.as_tensor(state["signs"], dtype=torch.float64)
        self.signs = signs.clone() if state["has_signs"] else None
        self.window = int(state["window"])
        start = float(state["start"])
        self.start = None if math.isnan(start) else start
        self.deltas = [float(v) for v in torch.as_tensor(state["deltas"]).tolist()]
        self.updates = int(state["updates"])
        self.touched = torch.as_tensor(state["touched"], dtype=torch.bool).clone()
