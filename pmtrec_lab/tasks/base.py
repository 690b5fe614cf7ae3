"""Tasks: the main ranking task and the auxiliary tasks, each with its data, sampler and loss.

A task touches user and/or item rows. Per step the trainer:
1. asks every task for a batch (``next_batch``), global ids;
2. gathers the union of touched users and items, encodes them once;
3. calls ``loss(zu, zi, local)`` with the batch's ids mapped to positions in the union.

An epoch is one pass over the main task's training pairs; each auxiliary task's batch is sized
to cover its own training rows once per epoch (``../shared/docs/pmtrec-method.md``, Batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TaskBatch:
    """Global ids a task uses in one step, by role; ``users``/``items`` list every touched row."""

    roles: dict[str, torch.Tensor]  # e.g. {"user": ..., "pos": ..., "neg": ...}
    user_roles: tuple[str, ...]
    item_roles: tuple[str, ...]
    extra: dict[str, torch.Tensor] | None = None  # e.g. label targets

    def users(self) -> list[torch.Tensor]:
        return [self.roles[r] for r in self.user_roles]

    def items(self) -> list[torch.Tensor]:
        return [self.roles[r] for r in self.item_roles]


class Task(nn.Module):
    """Base class; subclasses define the data rows, sampling and the loss."""

    type: str = "base"

    def __init__(self, name: str, num_rows: int, batch_size: int | None):
        super().__init__()
        if num_rows == 0:
            raise ValueError(f"task {name!r} has no training data")
        self.name = name
        self.num_rows = num_rows
        self.batch_size = batch_size
        self._order: torch.Tensor | None = None
        self._pos = 0

    # epoch plan ------------------------------------------------------------------------
    def start_epoch(self, steps: int, generator: torch.Generator) -> None:
        """Shuffle the rows; unless the batch size is fixed, plan ``steps`` batches that cover
        every row once.

        The batch size is ceil(n / steps). Where that would run out of rows before the last step
        ((steps - 1) * ceil(n / steps) >= n, small tasks), the rows are split into ``steps``
        balanced slices instead; a task with fewer rows than steps serves one row per step,
        cycling through its shuffled rows.
        """
        self._order = torch.randperm(self.num_rows, generator=generator)
        self._pos = 0
        self._step = 0
        self._bounds: list[int] | None = None
        if self.batch_size is not None:
            self._step_size = self.batch_size
            return
        n = self.num_rows
        self._step_size = math.ceil(n / steps)
        if (steps - 1) * self._step_size >= n:
            self._bounds = [i * n // steps for i in range(steps + 1)] if n >= steps else None
            self._step_size = 1 if n < steps else self._step_size

    def steps_for_epoch(self) -> int:
        assert self.batch_size is not None
        return math.ceil(self.num_rows / self.batch_size)

    def next_rows(self, generator: torch.Generator) -> torch.Tensor:
        assert self._order is not None, "start_epoch first"
        if self._bounds is not None and self._step + 1 < len(self._bounds):
            lo, hi = self._bounds[self._step], self._bounds[self._step + 1]
            self._step += 1
            return self._order[lo:hi]
        if self._pos >= self.num_rows:  # exhausted (fixed batch size, or more steps than planned)
            self._order = torch.randperm(self.num_rows, generator=generator)
            self._pos = 0
        rows = self._order[self._pos : self._pos + self._step_size]
        self._pos += self._step_size
        self._step += 1
        return rows

    # per step --------------------------------------------------------------------------
    def next_batch(self, generator: torch.Generator) -> TaskBatch:
        return self.make_batch(self.next_rows(generator), generator)

    def make_batch(self, rows: torch.Tensor, generator: torch.Generator) -> TaskBatch:
        raise NotImplementedError

    def loss(self, zu: torch.Tensor, zi: torch.Tensor, local: dict[str, torch.Tensor], batch: TaskBatch):
        """Mean loss over the batch; ``local[role]`` indexes rows of zu (user roles) or zi."""
        raise NotImplementedError

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    #: True when :meth:`loss_and_grads` gives the task's gradients in closed form
    analytic: bool = False

    def loss_and_grads(
        self,
        zu: torch.Tensor,
        zi: torch.Tensor,
        local: dict[str, torch.Tensor],
        batch: TaskBatch,
        grad_users: torch.Tensor,
        grad_items: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The loss and its gradients in closed form, without autograd (``optim.task_gradients:
        analytic``; only where :attr:`analytic`): adds the gradient with respect to every row of
        ``zu`` and ``zi`` into ``grad_users`` / ``grad_items`` (zero-filled, same shapes) and returns
        the mean loss and the gradients of ``head_parameters()``, in that order."""
        raise NotImplementedError(f"task {self.name!r} has no closed-form gradients")
