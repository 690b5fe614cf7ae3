"""The model's optimizer: Adam over every parameter (the default), or (MF only) a lazy optimizer over
the embedding tables and Adam over the rest (the task heads): ``optim.sparse`` takes torch's
SparseAdam, ``optim.optimizer=lazy_adam`` the per-row lazy Adam of ``pmtrec_lab.train.lazy_adam``.

Dense Adam updates every row of the tables at every step (rows outside the batch move on their
stale momentum), so an MF epoch costs steps x table size and grows faster than the data.
SparseAdam is lazy Adam: a step updates only the rows in the gradient, that is the rows the step
looked up (through ``encode`` or the L2 term on ``layer0``); the other rows keep their values and
their moments, and a row's bias correction uses the optimizer's step count, not the row's. The
results therefore differ from dense Adam's, but an epoch costs the rows it touches. SparseAdam's
step still grows with the table size; ``LazyAdam`` (index operations only, per-row bias
correction) does not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pmtrec_lab.config import RunConfig
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.train.lazy_adam import LazyAdam

__all__ = [
    "LazyDenseAdam",
    "PreconditionedTables",
    "SparseDenseAdam",
    "make_optimizer",
    "representation_tables",
    "sparse_parameters",
    "uses_sparse_tables",
]


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the model's embedding tables that give sparse gradients, in module order."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]


class SparseDenseAdam:
    """``torch.optim.SparseAdam`` over ``sparse_params``, ``torch.optim.Adam`` over ``dense_params``
    (none: no Adam), driven as one optimizer: ``zero_grad``, ``step``, ``state_dict`` (both
    states, under ``"sparse"`` and ``"dense"``) and ``load_state_dict``."""

    #: the state key of the table optimizer, and the setting named in errors
    key = "sparse"
    setting = "optim.sparse"

    def __init__(
        self,
        sparse_params: list[nn.Parameter],
        dense_params: list[nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
    ):
        if not sparse_params:
            raise ValueError(f"{self.setting}: the model has no embedding table with sparse gradients")
        self.sparse = self._table_optimizer(sparse_params, lr, weight_decay)
        self.dense = (
            torch.optim.Adam(dense_params, lr=lr, weight_decay=weight_decay) if dense_params else None
        )

    def _table_optimizer(
        self, params: list[nn.Parameter], lr: float, weight_decay: float
    ) -> torch.optim.Optimizer:
        return torch.optim.SparseAdam(params, lr=lr)

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
            self.key: self.sparse.state_dict(),
            "dense": self.dense.state_dict() if self.dense is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {self.key, "dense"}:
            raise ValueError(
                f"{self.setting}: the checkpoint holds another optimizer's state (keys {sorted(state)}, "
                f"expected {sorted([self.key, 'dense'])}); it was written by a run without {self.setting}"
            )
        self.sparse.load_state_dict(state[self.key])
        if (state["dense"] is None) != (self.dense is None):
            raise ValueError(f"{self.setting}: the checkpoint's dense parameters do not match the model's")
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])


class LazyDenseAdam(SparseDenseAdam):
    """``LazyAdam`` (per-row lazy Adam) over the tables, ``torch.optim.Adam`` over the rest; its
    state lies under ``"lazy"`` and ``"dense"``. ``weight_decay`` applies to both (touched rows
    only in the tables)."""

    key = "lazy"
    setting = "optim.optimizer=lazy_adam"

    def _table_optimizer(
        self, params: list[nn.Parameter], lr: float, weight_decay: float
    ) -> torch.optim.Optimizer:
        return LazyAdam(params, lr=lr, weight_decay=weight_decay)


class PreconditionedTables(SparseDenseAdam):
    """Plain SGD over the representation tables, ``torch.optim.Adam`` over the rest, for a method
    whose combined gradient is already a step direction (``Need.OWN_PRECONDITIONING``: PMTRec's
    per-task Adam, ``mtl/pmtrec/task_adam.py``); its state lies under ``"sgd"`` and ``"dense"``.
    A row no task touched gets a zero gradient and does not move."""

    key = "sgd"
    setting = "a method with its own preconditioning (task_adam)"

    def _table_optimizer(
        self, params: list[nn.Parameter], lr: float, weight_decay: float
    ) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def representation_tables(model: nn.Module) -> list[nn.Parameter]:
    """The weights of every embedding table of the model, in module order (sparse or not)."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]


def make_optimizer(
    cfg: RunConfig, model: nn.Module, own_preconditioning: bool = False
) -> torch.optim.Optimizer | SparseDenseAdam:
    """Adam over all parameters (the default), ``SparseDenseAdam`` with ``optim.sparse``, or
    ``LazyDenseAdam`` with ``optim.optimizer=lazy_adam``; with ``own_preconditioning`` (the method
    preconditions its gradients itself), ``PreconditionedTables``."""
    lazy = cfg.optim.optimizer == "lazy_adam"
    if own_preconditioning:
        if cfg.optim.sparse or lazy:
            raise ConfigError(
                f"method {cfg.method.name!r} preconditions its own gradients (task_adam), so the tables are "
                "stepped by SGD: set optim.sparse=false and optim.optimizer=adam"
            )
        tables = representation_tables(model)
        ids = {id(p) for p in tables}
        rest = [p for p in model.parameters() if id(p) not in ids]
        return PreconditionedTables(tables, rest, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if not cfg.optim.sparse and not lazy:
        return torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if cfg.optim.sparse and cfg.optim.weight_decay > 0:
        raise ValueError("optim.sparse needs optim.weight_decay=0: SparseAdam has no weight decay")
    sparse = sparse_parameters(model)
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    if lazy:
        return LazyDenseAdam(sparse, dense, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    return SparseDenseAdam(sparse, dense, lr=cfg.optim.lr)


def uses_sparse_tables(cfg: RunConfig) -> bool:
    """True when the run's optimizer wants the tables' gradients sparse (``optim.sparse`` or lazy Adam)."""
    return cfg.optim.sparse or cfg.optim.optimizer == "lazy_adam"
