"""Step 3'' (d), per-task second moments (``docs/pmtrec-method.md``, "The v3 step", 3'' (d), and
"The mechanism of harm"; ``moment_balance``): an auxiliary task's size cannot shrink the main
task's Adam steps on shared rows.

Adam divides a row's step by the root of the moving average of its squared *total* gradient.
Where an auxiliary gradient is 27-79x the main task's (``benchmarks/adam_pressure.py``: amazon
items, ml-100k users), that average is the auxiliary task's and the main task's steps there
shrink 3-16x. MTAdam (Malkiel and Wolf, "MTAdam: Automatic Balancing of Multiple Training Loss
Terms", arXiv 2006.14683) keeps Adam's moments per loss term and rescales each term's update to
the first term's magnitude. Here the same idea is a transformation of the per-entity task
gradients before the shared optimizer: per (row, task) and coordinate, a moving average v_x^k
of (g_x^k)^2 (decay ``moment_decay``, bias-corrected by the row's own update count, updated
before use on the rows the task touched), and each auxiliary gradient is rescaled coordinatewise
to the main task's root mean square on that row:

    g_x^k <- g_x^k * sqrt(v_hat_x^0) / (sqrt(v_hat_x^k) + eps)     (k > 0, where x has a main v)

so every task reaches Adam at the main task's scale per coordinate, and the combination's
weights and scales (lambda, delta, w) then set the tasks' relative step sizes. A row the main
task has never touched keeps its auxiliary gradients unchanged (there is no main scale to match).

The stage (``MomentBalance``) runs first, before the Gramian, out of the document's order: the
document lists it among the usefulness candidates (3''), but it transforms the task gradients
"before the rest of the step", so every later stage (norms, magnitudes, GMB, weights, alignment,
the combination) reads the balanced gradients, as before the stages were split.
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["EPS", "MomentBalance", "TaskMoments"]

EPS = 1e-12


class TaskMoments:
    def __init__(self, decay: float):
        self.decay = decay
        self.v: torch.Tensor | None = None  # [N, K, D]
        self.n: torch.Tensor | None = None  # [N, K] update counts

    def balance(
        self, grads: torch.Tensor, active: torch.Tensor, rows: torch.Tensor, num_rows: int
    ) -> torch.Tensor:
        """Update the moments from ``grads`` [K, E, D] where ``active`` [K, E], then return the
        balanced gradients [K, E, D] (the main task's unchanged)."""
        k, _, d = grads.shape
        if self.v is None:
            self.v = grads.new_zeros(num_rows, k, d)
            self.n = torch.zeros(num_rows, k, dtype=grads.dtype, device=grads.device)
        assert self.n is not None
        if tuple(self.v.shape) != (num_rows, k, d):
            have, need = tuple(self.v.shape), (num_rows, k, d)
            raise ValueError(f"pmtrec task moments are {have}, the model needs {need}")
        # Only the (row, task) pairs a task touched are updated and only auxiliary pairs whose
        # row has a main moment are rescaled: gathers of those pairs, the same arithmetic per
        # element as the dense form (bit-identical), about half the work.
        act_t = active.T  # [E, K]
        e_idx, k_idx = act_t.nonzero(as_tuple=True)
        r_idx = rows[e_idx]
        g_pairs = grads[k_idx, e_idx]  # [P, D]
        v_pairs = self.decay * self.v[r_idx, k_idx] + (1 - self.decay) * g_pairs * g_pairs
        self.v[r_idx, k_idx] = v_pairs
        self.n[rows] = self.n[rows] + act_t.to(grads.dtype)
        n = self.n[rows]  # [E, K]
        has_main = n[:, MAIN_TASK] > 0
        out = grads.clone()
        aux = has_main[e_idx] & (k_idx != MAIN_TASK)
        if bool(aux.any()):
            e_a, k_a = e_idx[aux], k_idx[aux]
            r_a = rows[e_a]
            corr = 1 - self.decay ** n.clamp_min(1)  # [E, K]
            rms_aux = (v_pairs[aux] / corr[e_a, k_a].unsqueeze(1)).sqrt()
            v_main = self.v[r_a, MAIN_TASK]
            rms_main = (v_main / corr[e_a, MAIN_TASK].unsqueeze(1)).sqrt()
            out[k_a, e_a] = g_pairs[aux] * (rms_main / (rms_aux + EPS))
        return out

    def state_dict(self) -> dict[str, Any]:
        if self.v is None:
            return {"v": torch.zeros(0, 0, 0), "n": torch.zeros(0, 0)}
        assert self.n is not None
        return {"v": self.v.clone(), "n": self.n.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        v, n = torch.as_tensor(state["v"]), torch.as_tensor(state["n"])
        if v.numel() == 0:
            self.v = self.n = None
            return
        if v.dim() != 3 or tuple(n.shape) != tuple(v.shape[:2]):
            raise ValueError(f"pmtrec task moments: inconsistent shapes {tuple(v.shape)}, {tuple(n.shape)}")
        self.v, self.n = v.clone(), n.clone()

    def to(self, device: torch.device | str) -> None:
        if self.v is not None:
            assert self.n is not None
            self.v, self.n = self.v.to(device), self.n.to(device)


class MomentBalance(Stage):
    """Replaces the step's task gradients by their balanced form (``TaskMoments.balance``)."""

    step = "3'' (d)"
    reads = ("moment_balance", "moment_decay")
    switches = ("moment_balance",)
    state_keys = ("task_moments",)
    state_name = "per-task second moments"

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        self.moments = TaskMoments(p.moment_decay)

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.moment_balance

    def run(self, s: PMTRecStep) -> None:
        rows, num_rows = s.rows("moment_balance")
        s.grads = self.moments.balance(s.grads, s.active_t, rows, num_rows)

    def state_dict(self) -> dict[str, Any]:
        return {"task_moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments.load_state_dict(state["task_moments"])

    def to(self, device: torch.device | str) -> None:
        self.moments.to(device)
