"""The DGL path after factoring the edge weights into node scales (``encoders.dgl_prop``): it equals
the torch.sparse path (same CSR weights ``w``) in outputs and gradients to rounding (in float64 to
the float32 rounding of the weights, which both paths compute in float32), for LightGCN and the
hetero encoder; its scales follow dtype moves and stay out of the state; it does not read the
edge weights at all (so a wrong factorization could not hide behind them)."""

from __future__ import annotations

import copy

import pytest
import torch

from pmtrec_lab.encoders import HeteroEncoder, LightGCNEncoder
from pmtrec_lab.encoders.dgl_prop import degree_scales, relation_graph, scaled_copy_sum
from pmtrec_lab.encoders.lightgcn import symmetric_norm
from tests.test_encoders import D, I, U, seeded, tiny_dataset


def _out_and_grads(enc, up_u, up_i):
    enc.zero_grad(set_to_none=True)
    u, i = enc()
    ((u * up_u).sum() + (i * up_i).sum()).backward()
    extra = [t for _, t in sorted(enc.extra_node_embeddings().items())]
    tables = [enc.user_embedding, enc.item_embedding, *extra]
    return [u.detach(), i.detach(), *[t.weight.grad for t in tables]]


MAKERS = {
    "lightgcn": lambda ds, p: LightGCNEncoder(ds, D, num_layers=3, propagation=p),
    "hetero": lambda ds, p: HeteroEncoder(ds, D, num_layers=3, propagation=p),
    "hetero-split": lambda ds, p: HeteroEncoder(
        ds, D, num_layers=2, split_relations={"trust": 0.5}, exclude={"coview"}, propagation=p
    ),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_dgl_path_equals_sparse_path_in_float64(name):
    ds = tiny_dataset()
    dgl_enc = seeded(lambda: MAKERS[name](ds, "dgl")).double()
    sparse_enc = seeded(lambda: MAKERS[name](ds, "sparse")).double()
    gen = torch.Generator().manual_seed(3)
    up_u = torch.randn(U, D, generator=gen, dtype=torch.float64)
    up_i = torch.randn(I, D, generator=gen, dtype=torch.float64)
    a, b = _out_and_grads(dgl_enc, up_u, up_i), _out_and_grads(sparse_enc, up_u, up_i)
    assert len(a) == len(b) >= 4
    for x, y in zip(a, b, strict=True):
        assert x.dtype == torch.float64
        # weights and scales are float32 values (a_r b_r vs rsqrt(ab)): at most a few float32 ulps
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-8)
    assert any(float(g.abs().max()) > 0 for g in a[2:])


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_dgl_path_equals_sparse_path_in_float32(name):
    ds = tiny_dataset()
    gen = torch.Generator().manual_seed(4)
    up_u, up_i = torch.randn(U, D, generator=gen), torch.randn(I, D, generator=gen)
    a = _out_and_grads(seeded(lambda: MAKERS[name](ds, "dgl")), up_u, up_i)
    b = _out_and_grads(seeded(lambda: MAKERS[name](ds, "sparse")), up_u, up_i)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=2e-6, atol=1e-7)


def test_the_dgl_path_never_reads_the_edge_weights():
    """The factored scales alone give the propagation: zeroing ``w`` changes nothing on the DGL path."""
    ds = tiny_dataset()
    for make in (MAKERS["lightgcn"], MAKERS["hetero"]):
        enc = seeded(lambda make=make: make(ds, "dgl"))
        ref = torch.cat(enc()).detach()
        graphs = [enc.graph] + [g for _, g in getattr(enc, "_dgl_relations", [])]
        for g in graphs:
            for et in g.canonical_etypes:
                if "w" in g.edges[et].data:
                    g.edges[et].data["w"] = torch.zeros_like(g.edges[et].data["w"])
        torch.testing.assert_close(torch.cat(enc()).detach(), ref, rtol=0, atol=0)


def test_scales_factor_the_symmetric_norm():
    enc = seeded(lambda: LightGCNEncoder(tiny_dataset(), D, propagation="dgl"))
    src, dst = enc.graph.edges()
    w = symmetric_norm(enc.graph)
    a, b = degree_scales(enc.graph)
    torch.testing.assert_close(a[src, 0] * b[dst, 0], w, rtol=1e-6, atol=0)
    n = enc.graph.num_nodes()
    x = torch.randn(n, 3)
    dense = torch.zeros(n, n).index_put_((dst, src), w, accumulate=True)
    out = scaled_copy_sum(relation_graph(enc.graph), x, a, b)
    torch.testing.assert_close(out, dense @ x, rtol=1e-5, atol=1e-6)


def test_dgl_scales_follow_the_module_and_stay_out_of_the_state():
    ds = tiny_dataset()
    for make in (MAKERS["lightgcn"], MAKERS["hetero"]):
        enc = seeded(lambda make=make: make(ds, "dgl"))
        assert all(not k.startswith("dgl_") for k in enc.state_dict())
        ref = torch.cat(enc()).detach()
        dbl = copy.deepcopy(enc).double()
        assert all(b.dtype == torch.float64 for n, b in dbl.named_buffers() if n.startswith("dgl_"))
        out = torch.cat(dbl())
        assert out.dtype == torch.float64
        torch.testing.assert_close(out.float(), ref, rtol=1e-5, atol=1e-6)
