"""Label tasks: a linear head on user or item representations.

Softmax cross-entropy for single-label sets (one label per entity: ciao's category, ml-100k's
occupation and age band), binary cross-entropy for multi-label sets (genres, tags, categories).
The head's parameters are the task's own; they receive head_weights[k] * grad(L_k).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pmtrec_lab.data.types import LabelSet
from pmtrec_lab.tasks.base import Task, TaskBatch


class LabelTask(Task):
    def __init__(self, name: str, labels: LabelSet, dim: int, batch_size: int | None):
        entities = np.unique(labels.entity)
        super().__init__(name, len(entities), batch_size)
        self.type = f"{labels.side}_label"
        self.side = labels.side
        self.multi = labels.multi
        self.num_labels = labels.num_labels
        # Plain CPU tensors, not buffers: ``model.to(device)`` must not move the sampling data
        # (batches are built on the CPU; ``loss`` moves the targets to the logits' device).
        self.entities = torch.as_tensor(entities, dtype=torch.int64)
        # targets aligned with ``entities``: class index, or a CSR of label lists (multi-label)
        pos = np.searchsorted(entities, labels.entity)
        if self.multi:
            order = np.argsort(pos, kind="stable")
            indptr = np.concatenate([[0], np.cumsum(np.bincount(pos, minlength=len(entities)))])
            self.indptr = torch.as_tensor(indptr, dtype=torch.int64)
            self.indices = torch.as_tensor(labels.label[order], dtype=torch.int64)
        else:
            target = np.empty(len(entities), dtype=np.int64)
            target[pos] = labels.label
            self.target = torch.as_tensor(target)
        self.head = nn.Linear(dim, self.num_labels)

    def make_batch(self, rows, generator):
        ent = self.entities[rows]
        if self.multi:
            starts, ends = self.indptr[rows], self.indptr[rows + 1]
            lengths = ends - starts
            row_of = torch.repeat_interleave(torch.arange(len(rows)), lengths)
            offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(
                torch.cumsum(lengths, 0) - lengths, lengths
            )
            cols = self.indices[starts[row_of] + offsets]
            y = torch.zeros(len(rows), self.num_labels)
            y[row_of, cols] = 1.0
        else:
            y = self.target[rows]
        roles = {"entity": ent}
        if self.side == "user":
            return TaskBatch(roles, user_roles=("entity",), item_roles=(), extra={"y": y})
        return TaskBatch(roles, user_roles=(), item_roles=("entity",), extra={"y": y})

    def loss(self, zu, zi, local, batch):
        z = (zu if self.side == "user" else zi)[local["entity"]]
        logits = self.head(z)
        y = batch.extra["y"].to(logits.device)
        if self.multi:
            return F.binary_cross_entropy_with_logits(logits, y)
        return F.cross_entropy(logits, y)

    def logits(self, zu: torch.Tensor, zi: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        """The head's logits ``[n, num_labels]`` for ``entities`` (global ids into the full tables
        ``zu``/``zi``), as its loss reads them; auxiliary-task evaluation predicts labels so."""
        return self.head((zu if self.side == "user" else zi)[entities])

    analytic = True

    def loss_and_grads(self, zu, zi, local, batch, grad_users, grad_items):
        """The linear head's losses in closed form, with ``logits = z W^T + b``: softmax
        cross-entropy ``dL/dlogits = (softmax - onehot) / B``; binary cross-entropy (mean over the
        B x C entries) ``(sigmoid - y) / (B C)``; then ``dL/dz = dlogits W``, ``dL/dW = dlogits^T z``,
        ``dL/db = sum dlogits``, with ``dL/dz`` added into the rows the batch read."""
        table = zu if self.side == "user" else zi
        z = table[local["entity"]]
        logits = self.head(z)
        y = batch.extra["y"].to(logits.device)
        if self.multi:
            loss = F.binary_cross_entropy_with_logits(logits, y)
            dlogits = (torch.sigmoid(logits) - y) / max(y.numel(), 1)
        else:
            loss = F.cross_entropy(logits, y)
            dlogits = torch.softmax(logits, dim=-1)
            dlogits[torch.arange(y.shape[0], device=y.device), y] -= 1.0
            dlogits = dlogits / max(y.shape[0], 1)
        grad_table = grad_users if self.side == "user" else grad_items
        grad_table.index_add_(0, local["entity"], dlogits @ self.head.weight)
        return loss, [dlogits.T @ z, dlogits.sum(0)]
