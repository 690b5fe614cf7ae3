"""The encoder interface: learnable layer-0 tables in, user and item representations out.

Every encoder owns two layer-0 tables, ``user_embedding`` [U, D] and ``item_embedding`` [I, D],
initialized from ``N(0, 0.1^2)`` (``INIT_STD``), the initialization of the LightGCN reference
code (He et al., SIGIR 2020). The caller seeds with ``torch.manual_seed`` before construction;
tables are created in a fixed order (users, items, then any extra node types in sorted order),
so the same seed gives the same tables across encoders.

- ``forward()`` -> ``(users [U, D], items [I, D])``: final representations of all entities.
- ``encode(users, items)`` -> the rows of just those entities (same values as indexing ``forward()``).
- ``layer0(users, items)`` -> layer-0 rows, for the L2 regularization of BPR-style losses.
- ``extra_node_embeddings()`` -> layer-0 tables of further node types (label nodes), or ``{}``.
- ``out_dim``: the width of the representations ``forward`` / ``encode`` return (what task heads
  are sized from).
- ``from_options(dataset, options)``: how the registry (``registry.build_encoder``) builds the
  encoder from the run's ``EncoderOptions``.

Graph encoders (``GraphEncoder``) propagate over a graph built once at construction, through one
of two equivalent paths:

- ``"dgl"``: DGL message passing, ``copy_u_sum`` between node scales that factor the edge weights
  (``dgl_prop``); CPU only, since PyPI's DGL has no CUDA kernels;
- ``"sparse"``: ``torch.sparse.mm`` over a CSR adjacency built from the same DGL graph
  (``sparse_prop``); works on any device;
- ``"auto"``: ``"dgl"`` when the embeddings are on the CPU, ``"sparse"`` otherwise, decided at every
  call, so ``module.to("cuda")`` just works (the CSR matrices live in non-persistent buffers that
  move with the module and stay out of ``state_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from pmtrec_lab.data.types import RecDataset

__all__ = [
    "INIT_STD",
    "PROPAGATIONS",
    "Encoder",
    "EncoderOptions",
    "GraphEncoder",
    "Propagation",
    "init_table",
]

Propagation = Literal["auto", "dgl", "sparse"]
PROPAGATIONS: tuple[str, ...] = ("auto", "dgl", "sparse")
INIT_STD = 0.1


def init_table(num: int, dim: int) -> nn.Embedding:
    """An embedding table initialized from ``N(0, INIT_STD^2)`` (LightGCN's reference initialization)."""
    table = nn.Embedding(num, dim)
    nn.init.normal_(table.weight, std=INIT_STD)
    return table


@dataclass(frozen=True)
class EncoderOptions:
    """What a run tells its encoder (``encoder.*`` and ``optim.sparse``); each encoder uses what it needs.

    ``exclude``: relation / label-set names left out of message passing (the sources of the
    active auxiliary tasks); ``split_relations``: name -> fraction of its rows used for message
    passing; ``sparse``: tables with sparse gradients (only where ``supports_sparse``).
    """

    dim: int
    num_layers: int = 0
    exclude: frozenset[str] = frozenset()
    split_relations: Mapping[str, float] = field(default_factory=dict)
    split_seed: int = 0
    propagation: str = "auto"
    sparse: bool = False


class Encoder(nn.Module):
    """Base class: holds the layer-0 user and item tables; subclasses define ``forward``."""

    user_embedding: nn.Embedding
    item_embedding: nn.Embedding
    #: True if the encoder can give sparse table gradients (``optim.sparse``); MF only here.
    supports_sparse: ClassVar[bool] = False

    @classmethod
    def from_options(cls, dataset: RecDataset, options: EncoderOptions) -> Encoder:
        """Build for ``dataset`` from the run's options (the registry calls this). The default
        passes the sizes and ``options.dim``; encoders that need more override it."""
        return cls(dataset.num_users, dataset.num_items, options.dim)

    def __init__(self, num_users: int, num_items: int, dim: int) -> None:
        super().__init__()
        if num_users <= 0 or num_items <= 0 or dim <= 0:
            raise ValueError(f"need positive sizes, got users={num_users} items={num_items} dim={dim}")
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.dim = int(dim)
        self.user_embedding = init_table(self.num_users, self.dim)
        self.item_embedding = init_table(self.num_items, self.dim)

    @property
    def out_dim(self) -> int:
        """Width of the representations ``forward`` and ``encode`` return (task heads read it).

        The layer-0 width ``dim`` here: MF returns the tables themselves, and the propagating
        encoders (LightGCN, hetero) average linear propagations of the tables, with no weight
        matrix that could change the width. An encoder with a projection overrides this."""
        return self.dim

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """Final representations of all users [U, D] and all items [I, D]."""
        raise NotImplementedError

    def encode(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations of the given user rows and item rows (graph encoders propagate, then gather)."""
        user_all, item_all = self()
        return user_all[users], item_all[items]

    def layer0(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 (learnable table) rows of the given users and items, for L2 regularization."""
        return self.user_embedding(users), self.item_embedding(items)

    def extra_node_embeddings(self) -> dict[str, nn.Embedding]:
        """Layer-0 tables of node types other than users and items, keyed by node type (none here)."""
        return {}


class GraphEncoder(Encoder):
    """Shared machinery of the propagating encoders: choice of path, CSR buffers, device checks."""

    def __init__(self, num_users: int, num_items: int, dim: int, num_layers: int, propagation: str) -> None:
        super().__init__(num_users, num_items, dim)
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_layers = int(num_layers)
        self.propagation: str = propagation

    def _register_adjacency(self, adj: torch.Tensor, adj_t: torch.Tensor) -> None:
        """Keep ``A`` and ``A^T`` (CSR) as their index and value tensors, in non-persistent buffers.

        Plain tensors move with ``module.to(...)`` and survive ``copy.deepcopy`` (a sparse CSR
        buffer does not); derived from the graph, they are rebuilt at construction and stay out of
        ``state_dict``. ``_adjacency`` wraps them back into CSR tensors without copying.
        """
        for prefix, mat in (("adj", adj), ("adj_t", adj_t)):
            self.register_buffer(f"{prefix}_crow", mat.crow_indices(), persistent=False)
            self.register_buffer(f"{prefix}_col", mat.col_indices(), persistent=False)
            self.register_buffer(f"{prefix}_val", mat.values(), persistent=False)
        self._adj_size = tuple(adj.shape)

    def _path(self, device: torch.device) -> str:
        """The path for embeddings on ``device``: the explicit choice, or auto (dgl on CPU, else sparse)."""
        path = self.propagation
        if path == "auto":
            path = "dgl" if device.type == "cpu" else "sparse"
        if path == "dgl" and device.type != "cpu":
            raise RuntimeError(
                f"propagation='dgl' needs CPU tensors (PyPI's DGL has no CUDA kernels), embeddings are on "
                f"{device}; use propagation='sparse' or 'auto'"
            )
        if path == "sparse" and getattr(self, "adj_val", None) is None:
            raise RuntimeError("this encoder was built with propagation='dgl' and has no sparse adjacency")
        return path

    def _adjacency(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, A^T)`` as CSR tensors on the buffers' device, values cast to ``dtype`` if needed."""
        mats = []
        for prefix in ("adj", "adj_t"):
            values = getattr(self, f"{prefix}_val")
            mats.append(
                torch.sparse_csr_tensor(
                    getattr(self, f"{prefix}_crow"),
                    getattr(self, f"{prefix}_col"),
                    values if values.dtype == dtype else values.to(dtype),
                    self._adj_size,
                    check_invariants=False,
                )
            )
        return mats[0], mats[1]

    def extra_repr(self) -> str:
        return (
            f"users={self.num_users}, items={self.num_items}, dim={self.dim}, "
            f"layers={self.num_layers}, propagation={self.propagation!r}"
        )
