"""Shared encoders: matrix factorization, LightGCN, and a multi-relation LightGCN over the heterograph.

``build_encoder(name, dataset, dim, num_layers, ...)`` builds one by name (``ENCODERS``). All
encoders share the ``Encoder`` interface (``base.py``): ``forward() -> (users [U, D], items [I, D])``,
``encode(users, items)``, ``layer0(users, items)``, ``extra_node_embeddings()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.encoders.base import INIT_STD, PROPAGATIONS, Encoder, GraphEncoder, Propagation
from pmtrec_lab.encoders.hetero import HeteroEncoder
from pmtrec_lab.encoders.lightgcn import LightGCNEncoder
from pmtrec_lab.encoders.mf import MFEncoder

__all__ = [
    "ENCODERS",
    "INIT_STD",
    "PROPAGATIONS",
    "Encoder",
    "GraphEncoder",
    "HeteroEncoder",
    "LightGCNEncoder",
    "MFEncoder",
    "Propagation",
    "build_encoder",
]

ENCODERS: tuple[str, ...] = ("mf", "lightgcn", "hetero")


def build_encoder(
    name: str,
    dataset: RecDataset,
    dim: int,
    num_layers: int,
    exclude: Iterable[str] = frozenset(),
    split_relations: Mapping[str, float] | None = None,
    split_seed: int = 0,
    propagation: str = "auto",
    sparse: bool = False,
) -> Encoder:
    """The encoder ``name`` (one of ``ENCODERS``) for ``dataset``; seed with ``torch.manual_seed`` first.

    ``mf`` ignores ``num_layers`` and the graph arguments; ``lightgcn`` propagates over training
    interactions only, so ``exclude`` / ``split_relations`` cannot leak anything into it and are
    ignored; ``hetero`` honours all of them (see ``HeteroEncoder``). ``sparse`` (``mf`` only): tables
    with sparse gradients, for ``torch.optim.SparseAdam`` (``optim.sparse``).
    """
    if sparse and name in ENCODERS and name != "mf":
        raise ValueError(
            f"optim.sparse (sparse embedding gradients) needs the mf encoder, not {name!r}: graph "
            "encoders propagate over the whole tables"
        )
    if name == "mf":
        return MFEncoder(dataset.num_users, dataset.num_items, dim, sparse=sparse)
    if name == "lightgcn":
        return LightGCNEncoder(dataset, dim, num_layers=num_layers, propagation=propagation)
    if name == "hetero":
        return HeteroEncoder(
            dataset,
            dim,
            num_layers=num_layers,
            exclude=exclude,
            split_relations=split_relations,
            split_seed=split_seed,
            propagation=propagation,
        )
    raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(ENCODERS)}")
