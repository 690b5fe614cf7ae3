"""Per-entity deviations delta_x^k (``docs/pmtrec-method.md``, "The v3 step", "Per-entity
deviations" and "The permuted control"; ``delta``).

An [N, K] table over every user and item (rows: user id, then num_users + item id), initial 0.
Where an entity has both a task's gradient and the meta loss's gradient in a step, its entry
moves by the cosine of the two and shrinks towards 0:

    delta_x^k <- clip((1 - decay) delta_x^k + lr cos(g_meta,x, g_x^k), -bound, bound)

and the combination scales the task's coefficient by exp(delta_x^k). An entity without a main
gradient in the step (or without a meta pair) keeps the weight it learned. The main task's column
stays 0.

``mode="permuted"`` is the issue's control for H3: the table is learned exactly the same way,
but the combination reads it through a permutation of the entities within each side, drawn
afresh every epoch from the method's generator; the values keep their distribution and lose
their owners. If per-entity weights carry information, ``learned`` beats ``permuted``.

The stage (``Deviations``) contributes exp(delta_x^k) as a factor of the combination's
coefficients (step 6), which alignment then acts on.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from pmtrec_lab.mtl.base import Need
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["Deviations", "EntityDeviation"]


class EntityDeviation:
    def __init__(self, mode: Literal["learned", "permuted"], lr: float, decay: float, bound: float):
        self.mode = mode
        self.lr = lr
        self.decay = decay
        self.bound = bound
        self.table: torch.Tensor | None = None  # [N, K]
        self.perm: torch.Tensor | None = None  # [N]: row read for each row ("permuted")
        self.perm_epoch: int | None = None

    def _ensure(self, num_rows: int, num_tasks: int, like: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            self.table = torch.zeros(num_rows, num_tasks, dtype=like.dtype, device=like.device)
        elif tuple(self.table.shape) != (num_rows, num_tasks):
            raise ValueError(
                f"pmtrec delta table is {tuple(self.table.shape)}, the model needs {(num_rows, num_tasks)}"
            )
        return self.table

    def update(self, rows: torch.Tensor, cos: torch.Tensor, both: torch.Tensor, num_rows: int) -> None:
        """Move the step's rows (``rows`` [E]) by ``cos`` [K, E] where ``both`` [K, E] (bool)."""
        table = self._ensure(num_rows, cos.shape[0], cos)
        old = table[rows].T  # [K, E]
        new = ((1.0 - self.decay) * old + self.lr * cos).clamp(-self.bound, self.bound)
        new = torch.where(both, new, old)
        new[MAIN_TASK] = 0.0
        table[rows] = new.T.to(table.dtype)

    def applied(
        self, rows: torch.Tensor, num_entities: tuple[int, int], epoch: int, generator: torch.Generator
    ) -> torch.Tensor:
        """The deviations the combination uses for the step's rows, [K, E]."""
        assert self.table is not None, "update before applied"
        if self.mode == "learned":
            return self.table[rows].T
        if self.perm is None or self.perm_epoch != epoch:
            n_u, n_i = int(num_entities[0]), int(num_entities[1])
            users = torch.randperm(n_u, generator=generator)
            perm = torch.cat([users, n_u + torch.randperm(n_i, generator=generator)])
            self.perm, self.perm_epoch = perm.to(rows.device), epoch
        return self.table[self.perm[rows]].T

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"table": None if self.table is None else self.table.detach().clone()}
        if self.perm is not None:
            state["perm"] = self.perm.clone()
            state["perm_epoch"] = int(self.perm_epoch or 0)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        table = state.get("table")
        self.table = None if table is None else torch.as_tensor(table).clone()
        perm = state.get("perm")
        self.perm = None if perm is None else torch.as_tensor(perm).clone()
        self.perm_epoch = int(state["perm_epoch"]) if perm is not None else None

    def to(self, device: torch.device | str) -> None:
        if self.table is not None:
            self.table = self.table.to(device)
        if self.perm is not None:
            self.perm = self.perm.to(device)


class Deviations(Stage):
    """exp(delta_x^k) for the step's rows, after updating the table from the meta cosines.

    Diagnostics: ``delta_mean`` and ``delta_abs`` [2, K] (the applied deviations and their
    absolute values, averaged over the rows each task touched per side; NaN where none).
    """

    step = "delta"
    reads = ("delta", "delta_lr", "delta_decay", "delta_max")
    switches = ("delta",)
    state_keys = ("entity_deviation",)
    state_name = "per-entity deviations"
    needs = frozenset({Need.META_GRADIENTS})

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        mode = "permuted" if p.delta == "permuted" else "learned"
        self.deviation = EntityDeviation(mode, p.delta_lr, p.delta_decay, p.delta_max)

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.delta != "off"

    def run(self, s: PMTRecStep) -> None:
        what = f"delta={self.p.delta!r}"
        rows, num_rows = s.rows(what)
        cos, both = s.meta_cosines(what)
        self.deviation.update(rows, cos, both > 0, num_rows)
        ctx = s.ctx
        assert ctx.num_entities is not None  # s.rows checked it
        used = self.deviation.applied(rows, ctx.num_entities, ctx.epoch, ctx.generator).to(s.dtype)
        s.factors.append(used.exp())
        n_side = s.act @ s.onehot  # [K, 2]
        undefined = torch.full_like(n_side, float("nan"))
        for key, values in (("delta_mean", used), ("delta_abs", used.abs())):
            mean = (values * s.act) @ s.onehot / n_side.clamp_min(1)
            s.diagnostics[key] = torch.where(n_side > 0, mean, undefined).T

    def state_dict(self) -> dict[str, Any]:
        return {"entity_deviation": self.deviation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.deviation.load_state_dict(state["entity_deviation"])

    def to(self, device: torch.device | str) -> None:
        self.deviation.to(device)
