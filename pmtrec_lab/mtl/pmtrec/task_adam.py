"""v4 candidate 1 (b), per-task Adam (``docs/pmtrec-method.md``, "PMTRec v4", "Candidates";
``task_adam``): every task's gradient is preconditioned by its own Adam moments before the tasks
are combined, so an auxiliary task's size cannot shrink the main task's steps.

Adam divides a row's step by the root of the moving average of its squared *total* gradient; where
an auxiliary gradient is 27-79x the main task's (``benchmarks/adam_pressure.py``: amazon items,
ml-100k users), that average is the auxiliary task's and the main task's steps there shrink 3-16x.
``moment_balance`` (v3) rescales each auxiliary gradient to the main task's root mean square and
then shares one Adam, whose normalization of the sum still couples the tasks. Here each task has
its own Adam (MTAdam's idea, Malkiel and Wolf, arXiv 2006.14683, taken to the end): per (row,
task) and coordinate, first and second moments of the task's gradient (Adam's recurrences with
``beta1 = 0.9``, ``beta2 = 0.999``, ``eps = 1e-8``, bias-corrected by the (row, task)'s own update
count, updated only where the task touched the row), and the task's direction

    d_x^k = m_hat_x^k / (sqrt(v_hat_x^k) + eps)

replaces its gradient for every later stage, so the combination is sum_k coef[k, x] d_x^k. The
trainer then applies the combined direction to the representation tables with plain SGD at the
run's learning rate (``Need.OWN_PRECONDITIONING``; the other parameters, label heads, keep Adam),
so the main task's step on a row is exactly its own Adam step times its coefficient, whatever the
auxiliary tasks' sizes. Exact for MF, where a representation row is a table row; with a graph
encoder the direction is back-propagated through the propagation to the base rows.

The stage runs first, as ``MomentBalance`` does, because every later stage reads the gradients it
replaces. The two are alternatives (both on is refused when the parameters load).
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl.base import Need
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import PMTRecStep, Stage

__all__ = ["BETA1", "BETA2", "EPS", "TaskAdam", "TaskAdamMoments"]

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class TaskAdamMoments:
    """Adam's moments per (table row, task): m, v [N, K, D] and the update counts n [N, K]."""

    def __init__(self) -> None:
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.n: torch.Tensor | None = None

    def directions(
        self, grads: torch.Tensor, active: torch.Tensor, rows: torch.Tensor, num_rows: int
    ) -> torch.Tensor:
        """Update the moments from ``grads`` [K, E, D] where ``active`` [K, E] and return each
        task's Adam direction there [K, E, D] (0 where the task did not touch the row)."""
        k, _, d = grads.shape
        if self.m is None:
            self.m = grads.new_zeros(num_rows, k, d)
            self.v = grads.new_zeros(num_rows, k, d)
            self.n = torch.zeros(num_rows, k, dtype=grads.dtype, device=grads.device)
        assert self.v is not None and self.n is not None
        if tuple(self.m.shape) != (num_rows, k, d):
            have, need = tuple(self.m.shape), (num_rows, k, d)
            raise ValueError(f"pmtrec per-task Adam moments are {have}, the model needs {need}")
        e_idx, k_idx = active.T.nonzero(as_tuple=True)  # the (entity, task) pairs touched
        r_idx = rows[e_idx]
        g = grads[k_idx, e_idx]  # [P, D]
        m = BETA1 * self.m[r_idx, k_idx] + (1 - BETA1) * g
        v = BETA2 * self.v[r_idx, k_idx] + (1 - BETA2) * g * g
        n = self.n[r_idx, k_idx] + 1
        self.m[r_idx, k_idx], self.v[r_idx, k_idx], self.n[r_idx, k_idx] = m, v, n
        m_hat = m / (1 - BETA1**n).unsqueeze(1)
        v_hat = v / (1 - BETA2**n).unsqueeze(1)
        out = torch.zeros_like(grads)
        out[k_idx, e_idx] = m_hat / (v_hat.sqrt() + EPS)
        return out

    def state_dict(self) -> dict[str, Any]:
        if self.m is None:
            return {"m": torch.zeros(0, 0, 0), "v": torch.zeros(0, 0, 0), "n": torch.zeros(0, 0)}
        assert self.v is not None and self.n is not None
        return {"m": self.m.clone(), "v": self.v.clone(), "n": self.n.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m, v, n = (torch.as_tensor(state[key]) for key in ("m", "v", "n"))
        if m.numel() == 0:
            self.m = self.v = self.n = None
            return
        if m.dim() != 3 or m.shape != v.shape or tuple(n.shape) != tuple(m.shape[:2]):
            shapes = (tuple(m.shape), tuple(v.shape), tuple(n.shape))
            raise ValueError(f"pmtrec per-task Adam moments: inconsistent shapes {shapes}")
        self.m, self.v, self.n = m.clone(), v.clone(), n.clone()

    def to(self, device: torch.device | str) -> None:
        if self.m is not None:
            assert self.v is not None and self.n is not None
            self.m, self.v, self.n = self.m.to(device), self.v.to(device), self.n.to(device)


class TaskAdam(Stage):
    """Replaces the step's task gradients by their per-task Adam directions."""

    step = "v4 1 (b)"
    reads = ("task_adam",)
    switches = ("task_adam",)
    state_keys = ("task_adam",)
    state_name = "per-task Adam moments"
    needs = frozenset({Need.OWN_PRECONDITIONING})

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        self.moments = TaskAdamMoments()

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.task_adam

    def run(self, s: PMTRecStep) -> None:
        rows, num_rows = s.rows("task_adam")
        s.grads = self.moments.directions(s.grads, s.active_t, rows, num_rows)

    def state_dict(self) -> dict[str, Any]:
        return {"task_adam": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments.load_state_dict(state["task_adam"])

    def to(self, device: torch.device | str) -> None:
        self.moments.to(device)
