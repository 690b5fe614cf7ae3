"""The model's optimizer: Adam over every parameter, or with ``optim.sparse`` (MF only) SparseAdam
over the embedding tables and Adam over the rest (the task heads).

Dense Adam updates every row of the tables at every step (rows outside the batch move on their
stale momentum), so an MF epoch costs steps x table size and grows faster than the data.
SparseAdam is lazy Adam: a step updates only the rows in the gradient, that is the rows the step
looked up (through ``encode`` or the L2 term on ``layer0``); the other rows keep their values and
their moments, and a row's bias correction uses the optimizer's step count, not the row's. The
results therefore differ from dense Adam's, but an epoch costs the rows it touches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pmtrec_lab.config import RunConfig

__all__ = ["SparseDenseAdam", "make_optimizer", "sparse_parameters"]


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the model's embedding tables that give sparse gradients, in module order."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]


class SparseDenseAdam:
    """``torch.optim.SparseAdam`` over ``sparse_params``, ``torch.optim.Adam`` over ``dense_params``
    (none: no Adam), driven as one optimizer: ``zero_grad``, ``step``, ``state_dict`` (both
    states, under ``"sparse"`` and ``"dense"``) and ``load_state_dict``."""

    def __init__(self, sparse_params: list[nn.Parameter], dense_params: list[nn.Parameter], lr: float):
        if not sparse_params:
            raise ValueError("optim.sparse: the model has no embedding table with sparse gradients")
        self.sparse = torch.optim.SparseAdam(sparse_params, lr=lr)
        self.dense = torch.optim.Adam(dense_params, lr=lr) if dense_params else None

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.sparse] + ([self.dense] if self.dense is not None else [])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "sparse": self.sparse.state_dict(),
            "dense": self.dense.state_dict() if self.dense is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"sparse", "dense"}:
            raise ValueError(
                "optim.sparse: the checkpoint holds a dense Adam state, not SparseAdam + Adam; "
                "it was written by a run without optim.sparse"
            )
        self.sparse.load_state_dict(state["sparse"])
        if (state["dense"] is None) != (self.dense is None):
            raise ValueError("optim.sparse: the checkpoint's dense parameters do not match the model's")
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer | SparseDenseAdam:
    """Adam over all parameters (the default), or ``SparseDenseAdam`` with ``optim.sparse``."""
    if not cfg.optim.sparse:
        return torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if cfg.optim.weight_decay > 0:
        raise ValueError("optim.sparse needs optim.weight_decay=0: SparseAdam has no weight decay")
    sparse = sparse_parameters(model)
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    return SparseDenseAdam(sparse, dense, lr=cfg.optim.lr)
