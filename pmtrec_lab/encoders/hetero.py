"""A multi-relation LightGCN over the dataset's heterograph (users, items, label nodes).

Message passing follows LightGCN (He et al., SIGIR 2020) edge type by edge type, and combines
edge types by a mean, as in R-GCN-style heterogeneous convolution (Schlichtkrull et al., ESWC
2018) with the weight matrices removed, the way LightGCN removes them from NGCF:

    m^(k)_{r,v} = sum_{u -r-> v} 1 / sqrt(out_deg_r(u) in_deg_r(v)) h^(k)_u      for each edge type r
    h^(k+1)_v   = mean over the edge types r that reach v of m^(k)_{r,v}
    h_v         = mean_{k=0..L} h^(k)_v

Design choices (kept simple and fast):
- **No weight matrices and no per-relation scalars**: the layer-0 tables (users, items, one table
  per label set for its label nodes) are the only parameters, so per-entity task gradients on
  representations stay a linear image of the table gradients, as in LightGCN.
- **Mean per destination node over the edge types that reach it** (in-degree > 0), not over all edge
  types into its node type: a user without any ``trust`` edge gets exactly the LightGCN interaction
  message instead of half of it, so representation scales do not depend on relation coverage.
  For a dataset with no relations or labels the encoder is LightGCN exactly (tested).
- Both the normalization and the mean are constants of the graph, folded at construction into one
  edge weight ``w = a_r(src) b_r(dst)`` with ``a_r = out_deg_r^-1/2`` and ``b_r = in_deg_r^-1/2 /
  n(dst)``; on the ``torch.sparse`` path a layer is one block-structured CSR matrix (node types
  stacked in ``graph.ntypes`` order) holding ``w``; on the DGL path, per edge type,
  ``b_r * copy_u_sum(g_r, a_r * h)`` over that type's graph, built once (``dgl_prop``: DGL's fast
  CPU kernel; ``multi_update_all`` with ``fn.u_mul_e`` was several times slower).

What enters the graph (``pmtrec_lab.data.graph.build_graph``, training interactions only):
- every relation and label set, except those named in ``exclude`` (the trainer passes the sources
  of the active auxiliary tasks, which would otherwise become trivial: predicting an edge the
  encoder propagates over);
- for a name in ``split_relations = {name: message_fraction}`` (relation or label set; overrides
  ``exclude``), only its message rows ``relation_split(len(rows), fraction, split_seed)[0]``; the
  task trains on the supervision rows ``[1]``. ``message_rows(name)`` / ``supervision_rows(name)``
  return them; ``pmtrec_lab.data.graph.relation_split`` is the one shared function.
Relations are directed as stored (messages flow ``src -> dst``), like the heterograph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from pmtrec_lab.data.graph import build_graph, relation_split
from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.dgl_compat import dgl
from pmtrec_lab.encoders.base import EncoderOptions, GraphEncoder, init_table
from pmtrec_lab.encoders.dgl_prop import degree_scales, relation_graph, scaled_copy_sum
from pmtrec_lab.encoders.lightgcn import symmetric_norm
from pmtrec_lab.encoders.registry import register_encoder
from pmtrec_lab.encoders.sparse_prop import csr_pair, spmm

__all__ = ["HeteroEncoder", "hetero_edge_weights"]


def _reaching(graph: dgl.DGLGraph) -> dict[str, torch.Tensor]:
    """Per node type, ``n(v)``: the number of edge types with an edge into ``v`` (at least 1)."""
    reaching = {nt: torch.zeros(graph.num_nodes(nt)) for nt in graph.ntypes}
    for et in graph.canonical_etypes:
        reaching[et[2]] += (graph.in_degrees(etype=et) > 0).to(torch.float32)
    return {nt: n.clamp(min=1.0) for nt, n in reaching.items()}


def hetero_edge_weights(graph: dgl.DGLGraph) -> dict[tuple[str, str, str], torch.Tensor]:
    """Per edge type, ``1/sqrt(out_deg_r(src) in_deg_r(dst)) / n(dst)`` with ``n(dst)`` the number of
    edge types with at least one edge into ``dst`` (the per-node mean over edge types)."""
    reaching = _reaching(graph)
    weights = {}
    for et in graph.canonical_etypes:
        _, dst = graph.edges(etype=et)
        weights[et] = symmetric_norm(graph, et) / reaching[et[2]][dst]
    return weights


def _restrict(dataset: RecDataset, rows: Mapping[str, np.ndarray]) -> RecDataset:
    """A shallow copy of ``dataset`` whose relations / label sets named in ``rows`` keep only those rows."""
    relations = dict(dataset.relations)
    labels = dict(dataset.labels)
    for name, idx in rows.items():
        if name in relations:
            rel = relations[name]
            relations[name] = dataclasses.replace(rel, src=rel.src[idx], dst=rel.dst[idx])
        else:
            lab = labels[name]
            labels[name] = dataclasses.replace(lab, entity=lab.entity[idx], label=lab.label[idx])
    return dataclasses.replace(dataset, relations=relations, labels=labels)


@register_encoder("hetero")
class HeteroEncoder(GraphEncoder):
    """Multi-relation LightGCN-style encoder; see the module docstring for the model and the choices.

    Parameters: ``dataset`` (its training split, relations and label sets), ``dim``, ``num_layers``,
    ``exclude`` (relation / label-set names left out of message passing), ``split_relations``
    (name -> message fraction in (0, 1)), ``split_seed``, ``propagation`` (``"auto"|"dgl"|"sparse"``).
    Unknown names in ``exclude`` or ``split_relations`` raise ``ValueError`` (a typo would silently
    leak a task's targets into the graph).
    """

    @classmethod
    def from_options(cls, dataset: RecDataset, options: EncoderOptions) -> HeteroEncoder:
        return cls(
            dataset,
            options.dim,
            num_layers=options.num_layers,
            exclude=options.exclude,
            split_relations=options.split_relations or None,
            split_seed=options.split_seed,
            propagation=options.propagation,
        )

    @property
    def out_dim(self) -> int:
        """``dim``: every node type's table (users, items, label nodes) is ``dim`` wide, a layer is a
        weighted sum of neighbours' rows with scalar edge weights, and the output is the mean of the
        layers, so nothing changes the width (``forward_all``)."""
        return self.dim

    def __init__(
        self,
        dataset: RecDataset,
        dim: int,
        num_layers: int = 2,
        exclude: Iterable[str] = frozenset(),
        split_relations: Mapping[str, float] | None = None,
        split_seed: int = 0,
        propagation: str = "auto",
    ) -> None:
        super().__init__(dataset.num_users, dataset.num_items, dim, num_layers, propagation)
        sources = {
            **{n: len(r) for n, r in dataset.relations.items()},
            **{n: len(l) for n, l in dataset.labels.items()},
        }
        exclude = frozenset(exclude)
        split = dict(split_relations or {})
        unknown = sorted((exclude | set(split)) - set(sources))
        if unknown:
            raise ValueError(f"unknown relation/label names {unknown}; dataset has {sorted(sources)}")
        self.exclude = exclude
        self.split_relations = split
        self.split_seed = int(split_seed)

        self._rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (message, supervision)
        for name, n in sources.items():
            every = np.arange(n, dtype=np.int64)
            if name in split:
                msg, sup = relation_split(n, float(split[name]), self.split_seed)
                self._rows[name] = (msg.astype(np.int64), sup.astype(np.int64))
            elif name in exclude:
                self._rows[name] = (every[:0], every)
            else:
                self._rows[name] = (every, every[:0])

        view = _restrict(dataset, {name: self._rows[name][0] for name in split})
        graph = build_graph(view, exclude=exclude - set(split))
        weights = hetero_edge_weights(graph)
        for et, w in weights.items():
            graph.edges[et].data["w"] = w
        self.graph = graph
        self._dgl_relations: list[tuple[tuple[str, str, str], dgl.DGLGraph]] = []
        reaching = _reaching(graph)
        for r, et in enumerate(graph.canonical_etypes):
            src_scale, dst_scale = degree_scales(graph, et)
            self.register_buffer(f"dgl_src_scale_{r}", src_scale, persistent=False)
            dst_scale = dst_scale / reaching[et[2]].unsqueeze(1)
            self.register_buffer(f"dgl_dst_scale_{r}", dst_scale, persistent=False)
            self._dgl_relations.append((et, relation_graph(graph, et)))

        # One layer-0 table per extra node type (label nodes), created in sorted order after users/items.
        self.label_embeddings = nn.ModuleDict(
            {
                nt: init_table(graph.num_nodes(nt), dim)
                for nt in sorted(graph.ntypes)
                if nt not in ("user", "item")
            }
        )

        counts = [graph.num_nodes(nt) for nt in graph.ntypes]
        self._offsets = dict(zip(graph.ntypes, np.cumsum([0, *counts[:-1]]).tolist(), strict=True))
        self._counts = dict(zip(graph.ntypes, counts, strict=True))
        if propagation != "dgl":
            src_all, dst_all, w_all = [], [], []
            for et in graph.canonical_etypes:
                src, dst = graph.edges(etype=et)
                src_all.append(src.to(torch.int64) + self._offsets[et[0]])
                dst_all.append(dst.to(torch.int64) + self._offsets[et[2]])
                w_all.append(weights[et])
            self._register_adjacency(
                *csr_pair(torch.cat(src_all), torch.cat(dst_all), torch.cat(w_all), int(sum(counts)))
            )

    # --- rows of the relations -------------------------------------------------------------
    def message_rows(self, name: str) -> np.ndarray:
        """Row indices of relation / label set ``name`` that the encoder propagates over (sorted)."""
        return self._rows[name][0].copy()

    def supervision_rows(self, name: str) -> np.ndarray:
        """Row indices of ``name`` kept out of message passing (all if excluded, none if included)."""
        return self._rows[name][1].copy()

    # --- tables and propagation ------------------------------------------------------------
    def _tables(self) -> dict[str, nn.Embedding]:
        tables: dict[str, nn.Embedding] = {"user": self.user_embedding, "item": self.item_embedding}
        tables.update(self.label_embeddings.items())
        return tables

    def extra_node_embeddings(self) -> dict[str, nn.Embedding]:
        """Layer-0 tables of the label node types (``<label>_label``) present in the graph."""
        return dict(self.label_embeddings.items())

    def forward_all(self) -> dict[str, torch.Tensor]:
        """Final representations of every node type (users, items, label nodes)."""
        tables = self._tables()
        h0 = {nt: tables[nt].weight for nt in self.graph.ntypes}
        device, dtype = self.user_embedding.weight.device, self.user_embedding.weight.dtype
        if self._path(device) == "sparse":
            adj, adj_t = self._adjacency(dtype)
            x = torch.cat([h0[nt] for nt in self.graph.ntypes], dim=0)
            acc = x
            for _ in range(self.num_layers):
                x = spmm(adj, adj_t, x)
                acc = acc + x
            acc = acc / (self.num_layers + 1)
            return {
                nt: acc[self._offsets[nt] : self._offsets[nt] + self._counts[nt]] for nt in self.graph.ntypes
            }
        return self._propagate_dgl(h0)

    def _propagate_dgl(self, h0: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per layer and edge type ``b_r * copy_u_sum(g_r, a_r * h_src)``, summed per destination type
        (in ``canonical_etypes`` order); a node type no edge reaches gets zeros, as on the sparse path."""
        dtype = self.user_embedding.weight.dtype
        scales = [
            (getattr(self, f"dgl_src_scale_{r}").to(dtype), getattr(self, f"dgl_dst_scale_{r}").to(dtype))
            for r in range(len(self._dgl_relations))
        ]
        acc, h = dict(h0), dict(h0)
        for _ in range(self.num_layers):
            out: dict[str, torch.Tensor] = {}
            for (et, sub), (src_scale, dst_scale) in zip(self._dgl_relations, scales, strict=True):
                m = scaled_copy_sum(sub, h[et[0]], src_scale, dst_scale)
                out[et[2]] = m if et[2] not in out else out[et[2]] + m
            h = {nt: out[nt] if nt in out else torch.zeros_like(h[nt]) for nt in h}
            acc = {nt: acc[nt] + h[nt] for nt in acc}
        return {nt: acc[nt] / (self.num_layers + 1) for nt in self.graph.ntypes}

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_all()
        return out["user"], out["item"]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, etypes={[et[1] for et in self.graph.canonical_etypes]}, "
            f"exclude={sorted(self.exclude)}, split_relations={self.split_relations}"
        )
