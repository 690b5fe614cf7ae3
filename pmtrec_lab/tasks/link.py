"""Link tasks with BPR losses (Rendle et al., UAI 2009): the main task and same-side links.

- ``RecTask`` (``rec``, main): BPR over (u, i+, i-) with uniform negatives from the training pairs.
- ``SocialTask`` (``social``): BPR over (u, linked v, random w), dot-product scores.
- ``ItemItemTask`` (``item_item``): BPR over (i, related j, random j').
Negatives that are observed positives are rejected by default.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pmtrec_lab.tasks.base import Task, TaskBatch
from pmtrec_lab.tasks.sampling import ObservedPairs, sample_negatives


def bpr(anchor: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid((anchor * pos).sum(-1) - (anchor * neg).sum(-1)).mean()


class _PairTask(Task):
    """BPR over (anchor, target+, target-) with anchor on side ``anchor_side``."""

    anchor_side = "user"
    target_side = "item"

    def __init__(self, name, src: np.ndarray, dst: np.ndarray, num_targets: int, batch_size, reject_observed):
        super().__init__(name, len(src), batch_size)
        # Plain CPU tensors, not buffers: ``model.to(device)`` must not move them. Batches are
        # sampled on the CPU with the epoch's CPU generator and ``layout_step`` maps them there.
        self.src = torch.as_tensor(src, dtype=torch.int64)
        self.dst = torch.as_tensor(dst, dtype=torch.int64)
        self.num_targets = num_targets
        self.observed = ObservedPairs(self.src, self.dst, num_targets) if reject_observed else None

    def make_batch(self, rows, generator):
        a, p = self.src[rows], self.dst[rows]
        n = sample_negatives(a, self.num_targets, generator, self.observed)
        roles = {"anchor": a, "pos": p, "neg": n}
        if self.anchor_side == self.target_side:
            side_roles = ("anchor", "pos", "neg")
            return TaskBatch(
                roles,
                user_roles=side_roles if self.anchor_side == "user" else (),
                item_roles=side_roles if self.anchor_side == "item" else (),
            )
        return TaskBatch(roles, user_roles=("anchor",), item_roles=("pos", "neg"))

    def _table(self, zu, zi, role: str):
        side = self.anchor_side if role == "anchor" else self.target_side
        return zu if side == "user" else zi

    def loss(self, zu, zi, local, batch):
        return bpr(
            self._table(zu, zi, "anchor")[local["anchor"]],
            self._table(zu, zi, "pos")[local["pos"]],
            self._table(zu, zi, "neg")[local["neg"]],
        )

    def score_pairs(
        self, zu: torch.Tensor, zi: torch.Tensor, anchors: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The task's score of (anchor, target) pairs, the dot product its BPR loss ranks by, read
        from the full tables ``zu``/``zi`` (global ids): ``[E]`` for ``targets`` ``[E]``, ``[E, m]``
        for ``[E, m]`` (m targets per anchor); auxiliary-task evaluation scores held-out links so."""
        a = self._table(zu, zi, "anchor")[anchors]
        t = self._table(zu, zi, "pos")[targets]
        return (t * a.unsqueeze(-2)).sum(-1) if targets.dim() == 2 else (t * a).sum(-1)

    analytic = True

    def loss_and_grads(self, zu, zi, local, batch, grad_users, grad_items):
        """BPR in closed form: with ``x = a.(p - n)`` and ``L = mean(-log sigmoid(x))``,
        ``dL/dx = -sigmoid(-x) / B``, so ``dL/da = dL/dx (p - n)``, ``dL/dp = dL/dx a`` and
        ``dL/dn = -dL/dx a``, added into the rows the batch read."""
        a = self._table(zu, zi, "anchor")[local["anchor"]]
        p = self._table(zu, zi, "pos")[local["pos"]]
        n = self._table(zu, zi, "neg")[local["neg"]]
        x = (a * p).sum(-1) - (a * n).sum(-1)
        loss = -F.logsigmoid(x).mean()
        dx = (-torch.sigmoid(-x) / max(x.shape[0], 1)).unsqueeze(-1)
        anchor = grad_users if self.anchor_side == "user" else grad_items
        target = grad_users if self.target_side == "user" else grad_items
        anchor.index_add_(0, local["anchor"], dx * (p - n))
        target.index_add_(0, local["pos"], dx * a)
        target.index_add_(0, local["neg"], -dx * a)
        return loss, []


class RecTask(_PairTask):
    type = "rec"


class SocialTask(_PairTask):
    type = "social"
    anchor_side = "user"
    target_side = "user"


class ItemItemTask(_PairTask):
    type = "item_item"
    anchor_side = "item"
    target_side = "item"
