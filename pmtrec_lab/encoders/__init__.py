"""Shared encoders: matrix factorization, LightGCN, and a multi-relation LightGCN over the heterograph.

Encoders are found through ``registry``: each module registers its class with
``register_encoder(name)``, the package's modules are scanned on first use and the entry-point
group ``pmtrec_lab.encoders`` is loaded, so an encoder is one file. ``build_encoder(name, dataset,
dim, num_layers, ...)`` builds one by name; ``encoder_names()`` lists them; ``ENCODERS`` maps
names to classes. All encoders share the ``Encoder`` interface (``base.py``): ``forward() ->
(users [U, D], items [I, D])``, ``encode(users, items)``, ``layer0(users, items)``,
``extra_node_embeddings()``, ``out_dim``.
"""

from __future__ import annotations

from pmtrec_lab.encoders.base import (
    INIT_STD,
    PROPAGATIONS,
    Encoder,
    EncoderOptions,
    GraphEncoder,
    Propagation,
)
from pmtrec_lab.encoders.hetero import HeteroEncoder
from pmtrec_lab.encoders.lightgcn import LightGCNEncoder
from pmtrec_lab.encoders.mf import MFEncoder
from pmtrec_lab.encoders.registry import (
    ENCODERS,
    ENTRY_POINT_GROUP,
    build_encoder,
    encoder_names,
    get_encoder,
    register_encoder,
)

__all__ = [
    "ENCODERS",
    "ENTRY_POINT_GROUP",
    "INIT_STD",
    "PROPAGATIONS",
    "Encoder",
    "EncoderOptions",
    "GraphEncoder",
    "HeteroEncoder",
    "LightGCNEncoder",
    "MFEncoder",
    "Propagation",
    "build_encoder",
    "encoder_names",
    "get_encoder",
    "register_encoder",
]
