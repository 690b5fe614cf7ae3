"""Per-item metrics (``eval.items``) against a dense loop over every held-out pair, and the
decomposition that makes them a per-item view of the per-user NDCG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmtrec_lab.eval.evaluator import evaluate_embeddings
from pmtrec_lab.eval.items import per_item_metrics


def _case(seed: int, users: int = 60, items: int = 45, dim: int = 6):
    gen = torch.Generator().manual_seed(seed)
    user_emb, item_emb = torch.randn(users, dim, generator=gen), torch.randn(items, dim, generator=gen)
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.stack([rng.integers(0, users, 700), rng.integers(0, items, 700)], 1), axis=0)
    rng.shuffle(pairs)
    return user_emb, item_emb, pairs[:500], pairs[500:]  # disjoint train and held-out pairs


def _loop_reference(user_emb, item_emb, train, held, k):
    """Dense ranks, one held-out pair at a time."""
    scores = (user_emb @ item_emb.T).numpy()
    scores[train[:, 0], train[:, 1]] = -np.inf
    gains: dict[int, list[float]] = {}
    hits: dict[int, list[float]] = {}
    for u, x in held:
        n_rel = int((held[:, 0] == u).sum())
        idcg = sum(1.0 / np.log2(r + 1) for r in range(1, min(n_rel, k) + 1))
        rank = int((scores[u] > scores[u, x]).sum()) + 1
        gains.setdefault(int(x), []).append((1.0 / np.log2(rank + 1)) / idcg if rank <= k else 0.0)
        hits.setdefault(int(x), []).append(1.0 if rank <= k else 0.0)
    return {x: (len(g), np.mean(hits[x]), np.mean(g)) for x, g in gains.items()}


@pytest.mark.parametrize("seed,k", [(0, 20), (1, 10), (2, 5)])
def test_per_item_matches_a_loop_over_pairs(seed, k):
    user_emb, item_emb, train, held = _case(seed)
    result = evaluate_embeddings(user_emb, item_emb, [train], held, ks=(5, 10, 20), with_hits=True)
    frame = per_item_metrics(result, held, k)
    expected = _loop_reference(user_emb, item_emb, train, held, k)
    assert sorted(frame["item"]) == sorted(expected)
    for row in frame.to_dict("records"):
        pairs, recall, ndcg = expected[row["item"]]
        assert row["pairs"] == pairs
        assert row[f"recall@{k}"] == pytest.approx(recall)
        assert row[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_item_shares_sum_to_each_users_ndcg(seed):
    user_emb, item_emb, train, held = _case(seed)
    result = evaluate_embeddings(user_emb, item_emb, [train], held, ks=(20,), with_hits=True)
    # per pair share, summed per user, equals the per-user NDCG@20
    frame = per_item_metrics(result, held, 20)
    total_from_items = float((frame["ndcg@20"] * frame["pairs"]).sum())
    assert total_from_items == pytest.approx(float(result.per_user["ndcg@20"].sum()), abs=1e-9)


def test_hits_do_not_change_the_metrics_and_are_required():
    user_emb, item_emb, train, held = _case(5)
    plain = evaluate_embeddings(user_emb, item_emb, [train], held, chunk_users=7)
    with_hits = evaluate_embeddings(user_emb, item_emb, [train], held, chunk_users=7, with_hits=True)
    for name, values in plain.per_user.items():
        assert np.array_equal(values, with_hits.per_user[name])
    assert plain.hits is None
    with pytest.raises(ValueError, match="with_hits=True"):
        per_item_metrics(plain, held)
    with pytest.raises(ValueError, match="largest cutoff"):
        per_item_metrics(with_hits, held, k=100)
