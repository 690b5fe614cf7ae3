"""Encoders: MF, LightGCN and the multi-relation encoder, on a tiny hand-made dataset.

Properties tested: MF returns its tables; LightGCN equals a dense reference; the DGL and
torch.sparse paths agree in values and gradients; excluded relations, supervision rows and
validation/test pairs have no influence on representations.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from pmtrec_lab.data.graph import relation_split
from pmtrec_lab.data.types import LabelSet, RecDataset, Relation, Split
from pmtrec_lab.encoders import (
    ENCODERS,
    Encoder,
    HeteroEncoder,
    LightGCNEncoder,
    MFEncoder,
    build_encoder,
)

U, I, D = 6, 8, 5


def _arr(rows: list[list[int]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def tiny_dataset() -> RecDataset:
    """6 users, 8 items; user relation ``trust``; item relation ``coview``; item label set ``category``."""
    train = _arr(
        [[0, 0], [0, 1], [0, 2], [1, 1], [1, 3], [2, 2], [2, 4], [2, 5],
         [3, 0], [3, 6], [4, 5], [4, 7], [5, 3], [5, 6], [1, 7]]
    )  # fmt: skip
    valid = _arr([[0, 3], [2, 6], [4, 1]])
    test = _arr([[1, 4], [3, 7], [5, 0]])
    trust = Relation(
        "trust",
        "user",
        np.array([0, 1, 2, 3, 4, 5, 0, 2], np.int64),
        np.array([1, 2, 0, 4, 5, 3, 4, 5], np.int64),
    )
    coview = Relation(
        "coview", "item", np.array([0, 1, 2, 5, 6], np.int64), np.array([1, 2, 3, 6, 7], np.int64)
    )
    category = LabelSet(
        "category", "item", np.arange(8, dtype=np.int64), np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int64),
        num_labels=3, multi=False, names=["a", "b", "c"],
    )  # fmt: skip
    inter = np.concatenate([train, valid, test])
    return RecDataset(
        name="tiny",
        num_users=U,
        num_items=I,
        interactions=inter,
        relations={"trust": trust, "coview": coview},
        labels={"category": category},
        split=Split(train=train, valid=valid, test=test, train_only_users=0, split_seed=0),
        raw_counts={},
        user_ids=np.arange(U, dtype=np.int64),
        item_ids=np.arange(I, dtype=np.int64),
    )


def seeded(factory, seed: int = 0):
    torch.manual_seed(seed)
    return factory()


def _grads(enc: Encoder, up_u: torch.Tensor, up_i: torch.Tensor) -> tuple[torch.Tensor, ...]:
    enc.zero_grad(set_to_none=True)
    u, i = enc()
    ((u * up_u).sum() + (i * up_i).sum()).backward()
    extra = [t.weight.grad for _, t in sorted(enc.extra_node_embeddings().items())]
    return u.detach(), i.detach(), enc.user_embedding.weight.grad, enc.item_embedding.weight.grad, *extra


def _assert_same_paths(make) -> None:
    """DGL path and torch.sparse path: same outputs and same gradients for a random upstream gradient."""
    a, b = seeded(lambda: make("dgl")), seeded(lambda: make("sparse"))
    gen = torch.Generator().manual_seed(1)
    up_u, up_i = torch.randn(U, D, generator=gen), torch.randn(I, D, generator=gen)
    ga, gb = _grads(a, up_u, up_i), _grads(b, up_u, up_i)
    assert len(ga) == len(gb)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


# --- MF -------------------------------------------------------------------------------------
def test_mf_forward_is_the_tables_and_encode_gathers():
    enc = seeded(lambda: MFEncoder(U, I, D))
    u, i = enc()
    assert u is enc.user_embedding.weight and i is enc.item_embedding.weight
    users, items = torch.tensor([3, 0, 3]), torch.tensor([7, 1])
    eu, ei = enc.encode(users, items)
    torch.testing.assert_close(eu, enc.user_embedding.weight[users], rtol=0, atol=0)
    torch.testing.assert_close(ei, enc.item_embedding.weight[items], rtol=0, atol=0)
    lu, li = enc.layer0(users, items)
    torch.testing.assert_close(lu, eu, rtol=0, atol=0)
    assert enc.extra_node_embeddings() == {}
    assert abs(float(enc.user_embedding.weight.detach().std()) - 0.1) < 0.05


# --- LightGCN -------------------------------------------------------------------------------
def _dense_lightgcn(ds: RecDataset, e0: torch.Tensor, layers: int) -> torch.Tensor:
    n = ds.num_users + ds.num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    tr = torch.from_numpy(ds.split.train)
    a[tr[:, 0], tr[:, 1] + ds.num_users] = 1.0
    a[tr[:, 1] + ds.num_users, tr[:, 0]] = 1.0
    d = a.sum(1).clamp(min=1).rsqrt()
    norm = d[:, None] * a * d[None, :]
    x, acc = e0.double(), e0.double()
    for _ in range(layers):
        x = norm @ x
        acc = acc + x
    return acc / (layers + 1)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_lightgcn_dgl_matches_dense_reference(layers):
    ds = tiny_dataset()
    enc = seeded(lambda: LightGCNEncoder(ds, D, num_layers=layers, propagation="dgl"))
    u, i = enc()
    e0 = torch.cat([enc.user_embedding.weight, enc.item_embedding.weight]).detach()
    ref = _dense_lightgcn(ds, e0, layers).float()
    torch.testing.assert_close(torch.cat([u, i]).detach(), ref, rtol=0, atol=1e-6)


def test_lightgcn_dgl_and_sparse_agree_with_gradients():
    ds = tiny_dataset()
    _assert_same_paths(lambda p: LightGCNEncoder(ds, D, num_layers=3, propagation=p))


def test_lightgcn_accepts_heterograph_and_encode_gathers():
    from pmtrec_lab.data.graph import build_graph

    ds = tiny_dataset()
    a = seeded(lambda: LightGCNEncoder(ds, D, num_layers=2))
    b = seeded(lambda: LightGCNEncoder(build_graph(ds), D, num_layers=2))
    torch.testing.assert_close(torch.cat(a()), torch.cat(b()))
    users, items = torch.tensor([5, 1]), torch.tensor([0, 0, 7])
    eu, ei = a.encode(users, items)
    u, i = a()
    torch.testing.assert_close(eu, u[users])
    torch.testing.assert_close(ei, i[items])
    torch.testing.assert_close(a.layer0(users, items)[0], a.user_embedding.weight[users])


def test_lightgcn_ignores_valid_and_test_pairs():
    ds = tiny_dataset()
    other = dataclasses.replace(
        ds, split=dataclasses.replace(ds.split, valid=_arr([[0, 7], [1, 0]]), test=_arr([[2, 0], [5, 5]]))
    )
    a = seeded(lambda: LightGCNEncoder(ds, D))
    b = seeded(lambda: LightGCNEncoder(other, D))
    torch.testing.assert_close(torch.cat(a()), torch.cat(b()), rtol=0, atol=0)


def test_auto_path_and_module_moves():
    ds = tiny_dataset()
    enc = seeded(lambda: LightGCNEncoder(ds, D, propagation="auto"))
    assert enc._path(torch.device("cpu")) == "dgl"
    assert enc._path(torch.device("meta")) == "sparse"
    assert set(enc.state_dict()) == {"user_embedding.weight", "item_embedding.weight"}
    ref = torch.cat(enc()).detach()
    dbl = copy.deepcopy(enc).double()  # the sparse buffers follow module dtype/device moves
    adj, _ = dbl._adjacency(torch.float64)
    assert dbl.adj_val.dtype == torch.float64 and adj.layout == torch.sparse_csr
    dbl.propagation = "sparse"
    torch.testing.assert_close(torch.cat(dbl()).float(), ref)
    with pytest.raises(RuntimeError, match="dgl"):
        LightGCNEncoder(ds, D, propagation="dgl")._path(torch.device("cuda"))
    with pytest.raises(ValueError, match="propagation"):
        LightGCNEncoder(ds, D, propagation="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sparse_path_on_cuda():
    ds = tiny_dataset()
    for make in (lambda: LightGCNEncoder(ds, D), lambda: HeteroEncoder(ds, D)):
        enc = seeded(make)
        ref = torch.cat(enc()).detach()
        enc = enc.to("cuda")
        out = torch.cat(enc())
        out.sum().backward()
        torch.testing.assert_close(out.detach().cpu(), ref, rtol=1e-5, atol=1e-6)


# --- hetero ---------------------------------------------------------------------------------
def test_hetero_dgl_and_sparse_agree_with_gradients():
    ds = tiny_dataset()
    _assert_same_paths(lambda p: HeteroEncoder(ds, D, num_layers=2, propagation=p))
    _assert_same_paths(lambda p: HeteroEncoder(ds, D, num_layers=3, exclude={"coview"}, propagation=p))
    _assert_same_paths(
        lambda p: HeteroEncoder(ds, D, num_layers=2, split_relations={"trust": 0.5}, propagation=p)
    )


def test_hetero_without_relations_is_lightgcn():
    ds = dataclasses.replace(tiny_dataset(), relations={}, labels={})
    a = seeded(lambda: HeteroEncoder(ds, D, num_layers=3))
    b = seeded(lambda: LightGCNEncoder(ds, D, num_layers=3))
    torch.testing.assert_close(torch.cat(a()), torch.cat(b()))


def _dense_hetero(ds: RecDataset, h0: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Dense reference written from the model's definition: per edge type GCN-normalized sums, mean
    over the edge types reaching each node, mean over layers."""
    tr, rel_t, rel_c, lab = (
        ds.split.train,
        ds.relations["trust"],
        ds.relations["coview"],
        ds.labels["category"],
    )
    sizes = {"user": U, "item": I, "lab": lab.num_labels}
    etypes = [
        ("user", "item", tr[:, 0], tr[:, 1]),
        ("item", "user", tr[:, 1], tr[:, 0]),
        ("user", "user", rel_t.src, rel_t.dst),
        ("item", "item", rel_c.src, rel_c.dst),
        ("item", "lab", lab.entity, lab.label),
        ("lab", "item", lab.label, lab.entity),
    ]
    mats = []
    for st, dt, src, dst in etypes:
        a = torch.zeros(sizes[dt], sizes[st], dtype=torch.float64)
        a[torch.from_numpy(dst), torch.from_numpy(src)] = 1.0
        indeg, outdeg = a.sum(1).clamp(min=1), a.sum(0).clamp(min=1)
        mats.append((st, dt, a / (indeg[:, None] * outdeg[None, :]).sqrt(), a.sum(1) > 0))
    h = {k: v.double() for k, v in h0.items()}
    acc = dict(h)
    for _ in range(layers):
        msg = {k: torch.zeros_like(v) for k, v in h.items()}
        reach = {k: torch.zeros(sizes[k], 1, dtype=torch.float64) for k in h}
        for st, dt, norm, reached in mats:
            msg[dt] += norm @ h[st]
            reach[dt] += reached[:, None].double()
        h = {k: msg[k] / reach[k].clamp(min=1) for k in h}
        acc = {k: acc[k] + h[k] for k in h}
    return {k: v / (layers + 1) for k, v in acc.items()}


@pytest.mark.parametrize("propagation", ["dgl", "sparse"])
def test_hetero_matches_dense_reference(propagation):
    ds = tiny_dataset()
    enc = seeded(lambda: HeteroEncoder(ds, D, num_layers=3, propagation=propagation))
    tables = {
        "user": enc.user_embedding.weight,
        "item": enc.item_embedding.weight,
        "lab": enc.extra_node_embeddings()["category_label"].weight,
    }
    ref = _dense_hetero(ds, {k: v.detach() for k, v in tables.items()}, 3)
    out = enc.forward_all()
    for key, nt in (("user", "user"), ("item", "item"), ("lab", "category_label")):
        torch.testing.assert_close(out[nt].detach(), ref[key].float(), rtol=0, atol=1e-6)


def _perturb_trust(ds: RecDataset, rows: np.ndarray | None = None) -> RecDataset:
    """Rewire ``trust`` (all rows, or only ``rows``) to other targets."""
    rel = ds.relations["trust"]
    rows = np.arange(len(rel)) if rows is None else rows
    dst = rel.dst.copy()
    dst[rows] = (rel.src[rows] + 3) % U
    dst[rows] = np.where(dst[rows] == rel.src[rows], (dst[rows] + 1) % U, dst[rows])
    return dataclasses.replace(ds, relations={**ds.relations, "trust": dataclasses.replace(rel, dst=dst)})


def _perturb_category(ds: RecDataset) -> RecDataset:
    lab = ds.labels["category"]
    return dataclasses.replace(
        ds, labels={"category": dataclasses.replace(lab, label=(lab.label + 1) % lab.num_labels)}
    )


@pytest.mark.parametrize("propagation", ["dgl", "sparse"])
def test_hetero_excluded_relation_has_no_effect(propagation):
    ds = tiny_dataset()

    def out(data: RecDataset, exclude: set[str]) -> torch.Tensor:
        return torch.cat(seeded(lambda: HeteroEncoder(data, D, exclude=exclude, propagation=propagation))())

    # trust excluded: rewiring it changes nothing; category included: relabeling changes outputs
    base = out(ds, {"trust"})
    torch.testing.assert_close(out(_perturb_trust(ds), {"trust"}), base, rtol=0, atol=0)
    assert not torch.allclose(out(_perturb_category(ds), {"trust"}), base)
    # and the other way round
    base = out(ds, {"category"})
    torch.testing.assert_close(out(_perturb_category(ds), {"category"}), base, rtol=0, atol=0)
    assert not torch.allclose(out(_perturb_trust(ds), {"category"}), base)
    enc = HeteroEncoder(ds, D, exclude={"category", "trust"})
    assert enc.extra_node_embeddings() == {}
    assert ("user", "trust", "user") not in enc.graph.canonical_etypes
    assert enc.message_rows("trust").size == 0
    np.testing.assert_array_equal(enc.supervision_rows("trust"), np.arange(len(ds.relations["trust"])))


def test_hetero_ignores_valid_and_test_pairs():
    ds = tiny_dataset()
    other = dataclasses.replace(
        ds, split=dataclasses.replace(ds.split, valid=_arr([[0, 7], [1, 0]]), test=_arr([[2, 0], [5, 5]]))
    )
    for p in ("dgl", "sparse"):
        a = seeded(lambda p=p: HeteroEncoder(ds, D, propagation=p))
        b = seeded(lambda p=p: HeteroEncoder(other, D, propagation=p))
        torch.testing.assert_close(torch.cat(a()), torch.cat(b()), rtol=0, atol=0)


def test_hetero_split_relations_uses_exactly_the_message_rows():
    ds = tiny_dataset()
    rel = ds.relations["trust"]
    msg, sup = relation_split(len(rel), 0.5, 7)
    # the split overrides exclude for that name
    enc = seeded(
        lambda: HeteroEncoder(ds, D, exclude={"trust"}, split_relations={"trust": 0.5}, split_seed=7)
    )
    np.testing.assert_array_equal(enc.message_rows("trust"), msg)
    np.testing.assert_array_equal(enc.supervision_rows("trust"), sup)
    src, dst = enc.graph.edges(etype=("user", "trust", "user"), order="eid")
    got = sorted(zip(src.tolist(), dst.tolist(), strict=True))
    assert got == sorted(zip(rel.src[msg].tolist(), rel.dst[msg].tolist(), strict=True))
    # rewiring supervision rows changes nothing, rewiring message rows does
    base = torch.cat(enc())
    for rows, same in ((sup, True), (msg, False)):
        other = seeded(
            lambda rows=rows: HeteroEncoder(
                _perturb_trust(ds, rows), D, split_relations={"trust": 0.5}, split_seed=7
            )
        )
        assert torch.equal(torch.cat(other()), base) is same
    # label sets can be split too
    enc = HeteroEncoder(ds, D, split_relations={"category": 0.25})
    assert (
        enc.graph.num_edges(("item", "has_category", "category_label"))
        == len(enc.message_rows("category"))
        == 2
    )


def test_hetero_tables_and_encode():
    ds = tiny_dataset()
    enc = seeded(lambda: HeteroEncoder(ds, D))
    mf = seeded(lambda: MFEncoder(U, I, D))
    torch.testing.assert_close(enc.user_embedding.weight, mf.user_embedding.weight)  # same seed, same tables
    assert list(enc.extra_node_embeddings()) == ["category_label"]
    assert enc.extra_node_embeddings()["category_label"].weight.shape == (3, D)
    assert set(enc.forward_all()) == {"user", "item", "category_label"}
    users, items = torch.tensor([2, 2, 4]), torch.tensor([6])
    eu, ei = enc.encode(users, items)
    u, i = enc()
    torch.testing.assert_close(eu, u[users])
    torch.testing.assert_close(ei, i[items])
    with pytest.raises(ValueError, match="unknown relation"):
        HeteroEncoder(ds, D, exclude={"trsut"})


# --- factory --------------------------------------------------------------------------------
def test_build_encoder():
    ds = tiny_dataset()
    assert isinstance(build_encoder("mf", ds, D, 2), MFEncoder)
    lg = build_encoder("lightgcn", ds, D, 2, propagation="sparse")
    assert isinstance(lg, LightGCNEncoder) and lg.num_layers == 2 and lg.propagation == "sparse"
    he = build_encoder("hetero", ds, D, 1, exclude={"trust"}, split_relations={"coview": 0.6}, split_seed=3)
    assert isinstance(he, HeteroEncoder) and he.exclude == {"trust"} and he.split_seed == 3
    with pytest.raises(ValueError) as err:
        build_encoder("gcn", ds, D, 2)
    for name in ENCODERS:
        assert name in str(err.value)
