"""LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020) over the training user-item bipartite graph.

    e^(k+1)_u = sum_{i in N(u)} 1 / sqrt(|N(u)| |N(i)|) e^(k)_i      (and symmetrically for items)
    e_u = sum_{k=0..L} alpha_k e^(k)_u,   alpha_k = 1 / (L + 1)

No weight matrices, no nonlinearity, no self-loops: the only parameters are the layer-0 tables.

The graph is one homogeneous DGL graph of ``U + I`` nodes (users ``0..U-1``, items ``U..U+I-1``)
with both directions of every training pair and edge weight ``w = 1/sqrt(deg(src) deg(dst))``,
built once. The DGL path factors ``w`` into node scales, ``h' = d^-1/2 * copy_u_sum(g, d^-1/2 * h)``
(``dgl_prop``: DGL's fast CPU kernel; ``u_mul_e`` with the edge weights was 3.5-5x slower); the
sparse path multiplies by a CSR matrix built from the same graph's edges and weights.
"""

from __future__ import annotations

import torch

from pmtrec_lab.data.graph import INTERACTS
from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.dgl_compat import dgl
from pmtrec_lab.encoders.base import EncoderOptions, GraphEncoder
from pmtrec_lab.encoders.dgl_prop import degree_scales, relation_graph, scaled_copy_sum
from pmtrec_lab.encoders.registry import register_encoder
from pmtrec_lab.encoders.sparse_prop import csr_pair, spmm

__all__ = ["LightGCNEncoder", "bipartite_graph", "symmetric_norm"]


def symmetric_norm(graph: dgl.DGLGraph, etype: tuple[str, str, str] | None = None) -> torch.Tensor:
    """Per-edge ``1 / sqrt(out_deg(src) * in_deg(dst))`` of one edge type (the GCN normalization).

    On a symmetric graph both degrees are the plain degrees, giving LightGCN's 1/sqrt(d_u d_i).
    """
    src, dst = graph.edges(etype=etype)
    out_deg = graph.out_degrees(etype=etype).to(torch.float32).clamp(min=1.0)
    in_deg = graph.in_degrees(etype=etype).to(torch.float32).clamp(min=1.0)
    return (out_deg[src] * in_deg[dst]).rsqrt()


def bipartite_graph(graph_or_dataset: RecDataset | dgl.DGLGraph) -> tuple[dgl.DGLGraph, int, int]:
    """The homogeneous symmetric user-item graph with edge data ``w``, and ``(num_users, num_items)``.

    Accepts a ``RecDataset`` (its training pairs; validation and test never enter) or a DGL
    heterograph holding the ``("user", "interacts", "item")`` edge type (e.g. ``build_graph``'s).
    """
    if isinstance(graph_or_dataset, RecDataset):
        train = torch.from_numpy(graph_or_dataset.split.train).to(torch.int64).reshape(-1, 2)
        users, items = train[:, 0], train[:, 1]
        num_users, num_items = graph_or_dataset.num_users, graph_or_dataset.num_items
    elif isinstance(graph_or_dataset, dgl.DGLGraph):
        if INTERACTS not in graph_or_dataset.canonical_etypes:
            raise ValueError(
                f"the DGL graph has no {INTERACTS} edge type: {graph_or_dataset.canonical_etypes}"
            )
        users, items = graph_or_dataset.edges(etype=INTERACTS)
        users, items = users.to(torch.int64).cpu(), items.to(torch.int64).cpu()
        num_users, num_items = graph_or_dataset.num_nodes("user"), graph_or_dataset.num_nodes("item")
    else:
        raise TypeError(f"expected a RecDataset or a DGLGraph, got {type(graph_or_dataset).__name__}")
    shifted = items + num_users
    graph = dgl.graph(
        (torch.cat([users, shifted]), torch.cat([shifted, users])), num_nodes=num_users + num_items
    )
    graph.edata["w"] = symmetric_norm(graph)
    return graph, int(num_users), int(num_items)


@register_encoder("lightgcn")
class LightGCNEncoder(GraphEncoder):
    """LightGCN with mean layer combination over ``num_layers`` propagation layers.

    ``propagation``: ``"dgl"``, ``"sparse"`` or ``"auto"`` (DGL on CPU, torch.sparse elsewhere);
    see ``pmtrec_lab.encoders.base``. With ``"dgl"`` no sparse matrix is built.
    """

    @classmethod
    def from_options(cls, dataset: RecDataset, options: EncoderOptions) -> LightGCNEncoder:
        # training interactions only: exclude / split_relations cannot leak into it, so unused
        return cls(dataset, options.dim, num_layers=options.num_layers, propagation=options.propagation)

    def __init__(
        self,
        graph_or_dataset: RecDataset | dgl.DGLGraph,
        dim: int,
        num_layers: int = 3,
        propagation: str = "auto",
    ) -> None:
        graph, num_users, num_items = bipartite_graph(graph_or_dataset)
        super().__init__(num_users, num_items, dim, num_layers, propagation)
        self.graph = relation_graph(graph)
        src_scale, dst_scale = degree_scales(graph)
        self.register_buffer("dgl_src_scale", src_scale, persistent=False)
        self.register_buffer("dgl_dst_scale", dst_scale, persistent=False)
        if propagation != "dgl":
            src, dst = graph.edges()
            self._register_adjacency(*csr_pair(src, dst, graph.edata["w"], graph.num_nodes()))

    def propagate(self, h0: torch.Tensor) -> torch.Tensor:
        """Mean of layers ``0..L`` of LightGCN propagation of the stacked [U + I, D] features ``h0``."""
        path = self._path(h0.device)
        acc, h = h0, h0
        if path == "sparse":
            adj, adj_t = self._adjacency(h0.dtype)
            for _ in range(self.num_layers):
                h = spmm(adj, adj_t, h)
                acc = acc + h
        else:
            src_scale, dst_scale = self.dgl_src_scale.to(h0.dtype), self.dgl_dst_scale.to(h0.dtype)
            for _ in range(self.num_layers):
                h = scaled_copy_sum(self.graph, h, src_scale, dst_scale)
                acc = acc + h
        return acc / (self.num_layers + 1)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)
        out = self.propagate(h0)
        return out[: self.num_users], out[self.num_users :]
