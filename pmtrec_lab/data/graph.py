"""One DGL heterograph per dataset, holding every relation, built from the training split only.

Node types: ``user``, ``item``, and ``<label>_label`` for each label set (one node per label).
Edge types (canonical):
- ``("user", "interacts", "item")`` and ``("item", "interacted_by", "user")``: training pairs only,
  so nothing from validation or test leaks into message passing;
- ``("user", R, "user")`` for each user relation R (``trust``, ``friends``), directed as stored;
- ``("item", R, "item")`` for each item relation R (``coview``, ``kg``);
- ``(side, "has_<L>", "<L>_label")`` and ``("<L>_label", "<L>_of", side)`` for each label set L.

``relation_split`` divides a relation's rows into message and supervision parts, seeded, so that
an encoder can propagate over some edges of a relation that a task predicts while the task
trains on the rest; the encoder and the task call it with the same arguments.
"""

from __future__ import annotations

import numpy as np
import torch

from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.dgl_compat import dgl

INTERACTS = ("user", "interacts", "item")
INTERACTED_BY = ("item", "interacted_by", "user")


def label_node_type(label: str) -> str:
    return f"{label}_label"


def label_edge_types(label: str, side: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    node = label_node_type(label)
    return (side, f"has_{label}", node), (node, f"{label}_of", side)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def build_graph(ds: RecDataset, exclude: frozenset[str] | set[str] = frozenset()) -> dgl.DGLGraph:
    """The dataset's heterograph. Relations or label sets named in ``exclude`` are left out."""
    train = ds.split.train
    data: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]] = {
        INTERACTS: (_t(train[:, 0]), _t(train[:, 1])),
        INTERACTED_BY: (_t(train[:, 1]), _t(train[:, 0])),
    }
    num_nodes = {"user": ds.num_users, "item": ds.num_items}
    for name, rel in ds.relations.items():
        if name in exclude:
            continue
        data[(rel.side, name, rel.side)] = (_t(rel.src), _t(rel.dst))
    for name, lab in ds.labels.items():
        if name in exclude:
            continue
        fwd, rev = label_edge_types(name, lab.side)
        data[fwd] = (_t(lab.entity), _t(lab.label))
        data[rev] = (_t(lab.label), _t(lab.entity))
        num_nodes[label_node_type(name)] = lab.num_labels
    return dgl.heterograph(data, num_nodes_dict=num_nodes)


def relation_split(num_rows: int, message_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (message, supervision) of a relation, a seeded random partition."""
    if not 0.0 < message_fraction < 1.0:
        raise ValueError(f"message_fraction must be in (0, 1), got {message_fraction}")
    perm = np.random.default_rng(seed).permutation(num_rows)
    cut = int(round(message_fraction * num_rows))
    return np.sort(perm[:cut]), np.sort(perm[cut:])
