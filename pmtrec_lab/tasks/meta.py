"""The meta batch of PMTRec v3 (``docs/pmtrec-method.md``, "Meta split"): the main task's loss on
held-out pairs, whose gradient per row is the usefulness signal of methods that need
``Need.META_GRADIENTS``.

The meta split holds one training pair per user out of training (``data.meta_split``). In a step,
every touched user that has a meta pair contributes the BPR term of (user, meta item, sampled
negative), negatives drawn as for the main task (observed positives, meta pairs included,
rejected). The loss is never applied: ``train_step`` only differentiates it with respect to the
step's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pmtrec_lab.tasks.base import TaskBatch
from pmtrec_lab.tasks.sampling import ObservedPairs, sample_negatives


@dataclass
class MetaBatch:
    """The step's meta triples: global user ids (sorted, unique), meta items and negatives."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.numel())


class MetaPairs:
    """The meta split as a lookup ``user -> meta item`` (-1: the user has none)."""

    def __init__(self, meta: np.ndarray, num_users: int, num_items: int, observed: ObservedPairs | None):
        if len(meta) == 0:
            raise ValueError("the dataset has no meta pairs: load it with data.meta_split=true")
        item_of_user = torch.full((num_users,), -1, dtype=torch.int64)
        item_of_user[torch.as_tensor(meta[:, 0], dtype=torch.int64)] = torch.as_tensor(
            meta[:, 1], dtype=torch.int64
        )
        self.item_of_user = item_of_user
        self.num_items = num_items
        self.observed = observed

    def batch(self, touched_users: torch.Tensor, generator: torch.Generator) -> MetaBatch:
        """The meta triples of ``touched_users`` (unique global ids, on the CPU) that have one."""
        users = touched_users.cpu()
        pos = self.item_of_user[users]
        keep = pos >= 0
        users, pos = users[keep], pos[keep]
        neg = sample_negatives(users, self.num_items, generator, self.observed)
        return MetaBatch(users, pos, neg)

    def for_batches(self, batches: list[TaskBatch], generator: torch.Generator) -> MetaBatch:
        """The meta triples of a step: those of every user any task's batch touches."""
        touched = torch.unique(torch.cat([t for b in batches for t in b.users()]))
        return self.batch(touched, generator)

    def fixed_negatives(self, generator: torch.Generator) -> MetaBatch:
        """Every meta pair with one negative drawn once (for the meta loss on all meta pairs,
        which must then depend on the model alone)."""
        users = torch.nonzero(self.item_of_user >= 0).flatten()
        pos = self.item_of_user[users]
        return MetaBatch(users, pos, sample_negatives(users, self.num_items, generator, self.observed))
