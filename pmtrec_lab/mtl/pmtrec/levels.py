"""v4 candidate 1 (a), the auxiliary level per task chosen inside the run (``docs/pmtrec-method.md``,
"PMTRec v4", "Candidates"; ``level_select``).

The benefit map showed that on three of four datasets some auxiliary tasks help and others hurt,
and that gradient magnitudes cannot tell which (auxiliary/main norm ratios of about 22 where the
tasks help and 27 where they hurt). The level of each auxiliary task must therefore come from
measured usefulness on held-out data. This stage applies a level l_k >= 0 per auxiliary task as one
more factor of the combination's coefficients (the last, after usefulness and deviations, so the
alignment of 5a acts on the scaled coefficient and l_k = 0 removes task k from the shared rows
entirely; the main task's level is 1):

    coef[k, x] <- coef[k, x] * l_k

The combined gradient is linear in the levels (tested). The trainer chooses the levels
(``Need.LEVEL_SELECTION``, ``pmtrec_lab/train/level_selection.py``): before each epoch in
``level_at``, it branches short continuations of the run, one per candidate level, and keeps the
one whose continuation ranks the held-out meta pairs best (NDCG@20), by successive halving. The
auxiliary tasks are searched one at a time (the others at their current level) when there are at
most two of them, jointly (one shared level) otherwise; ``level_scope`` overrides this.

An auxiliary task touches one side in every dataset here (social links and user labels the users,
item-item links and item labels the items), so a level per task is a level per (task, side).

The state (``aux_levels``) is the levels [K], the rounds done and each round's record (the
candidates, their scores at each halving stage, the choice, the branch epochs spent), so a
resumed run neither repeats a round nor forgets one.
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl.base import Need
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["MAX_PER_TASK", "AuxLevels"]

#: with at most this many auxiliary tasks, ``level_scope="auto"`` searches each task's level in
#: turn; with more, one level shared by all of them (the branches' cost grows with the tasks)
MAX_PER_TASK = 2


class AuxLevels(Stage):
    """A level per auxiliary task, as a factor of the combination's coefficients, and the plan of
    the rounds in which the trainer chooses it."""

    step = "v4 1 (a)"
    reads = ("level_select", "level_values", "level_at", "level_branch_epochs", "level_scope")
    switches = ("level_select",)
    state_keys = ("aux_levels",)
    state_name = "the auxiliary levels chosen in the run"
    needs = frozenset({Need.LEVEL_SELECTION})

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        #: the current levels [K], as the trainer sets them and as the step reads them
        self.values: list[float] = [1.0] * num_tasks
        self.levels = torch.ones(num_tasks, dtype=torch.float64)
        self.rounds: list[dict[str, Any]] = []

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.level_select

    def run(self, s: PMTRecStep) -> None:
        s.factors.append(self.levels.to(device=s.grads.device, dtype=s.dtype).unsqueeze(1))

    # The trainer's side (``Need.LEVEL_SELECTION``) ------------------------------------
    def groups_due(self, epoch: int) -> list[list[int]]:
        """The task groups to choose a level for before 0-based ``epoch`` (each group's tasks share
        one level; searched in this order), or [] when no round is due there or it is done."""
        p = self.p
        if epoch not in p.level_at or any(r["epoch"] == epoch for r in self.rounds):
            return []
        aux = [k for k in range(self.num_tasks) if k != MAIN_TASK]
        if not aux:
            return []
        per_task = p.level_scope == "task" or (p.level_scope == "auto" and len(aux) <= MAX_PER_TASK)
        return [[k] for k in aux] if per_task else [aux]

    def candidates(self, group: list[int]) -> list[list[float]]:
        """The level vectors [K] to branch on for ``group``: the current levels with the group's
        tasks at each of ``level_values``."""
        out = []
        for value in self.p.level_values:
            levels = list(self.values)
            for k in group:
                levels[k] = float(value)
            out.append(levels)
        return out

    @property
    def branch_epochs(self) -> int:
        """Epochs each surviving branch trains per halving stage."""
        return self.p.level_branch_epochs

    def set_levels(self, levels: list[float]) -> None:
        if len(levels) != self.num_tasks or levels[MAIN_TASK] != 1.0 or min(levels) < 0:
            raise ValueError(
                f"levels must be {self.num_tasks} values >= 0 with the main task's 1, got {levels}"
            )
        self.values = [float(v) for v in levels]
        self.levels = torch.tensor(self.values, dtype=torch.float64)

    def end_round(self, record: dict[str, Any]) -> None:
        self.rounds.append(dict(record))

    # State ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"aux_levels": {"levels": self.levels.clone(), "rounds": [dict(r) for r in self.rounds]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["aux_levels"]
        levels = torch.as_tensor(saved["levels"], dtype=torch.float64)
        if tuple(levels.shape) != (self.num_tasks,):
            raise ValueError(
                f"pmtrec auxiliary levels: expected {self.num_tasks} levels, got {tuple(levels.shape)}"
            )
        self.set_levels([float(v) for v in levels])
        self.rounds = [dict(r) for r in saved["rounds"]]
