"""Beyond-accuracy metrics (``eval.beyond``) on hand-computed fixtures, the same through the
chunked evaluation as from dense lists, and item popularity groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmtrec_lab.eval.beyond import BeyondAccuracy, item_popularity_groups, tail_items
from pmtrec_lab.eval.evaluator import evaluate_embeddings

# 4 items, training interactions [5, 0, 1, 3] (item 1 never seen); two users' ranked lists
POPULARITY = np.array([5, 0, 1, 3])
LISTS = np.array([[0, 3], [0, 2]])


@pytest.mark.parametrize(
    "k,tail_ratio,expected",
    [
        # coverage 3/4; popularity (5+3)/2 and (5+1)/2; counts sorted [0, 1, 1, 2] -> (-1 + 1 + 6) / 16;
        # tail: the 1 least popular of the 3 seen items (item 2): 0 and 1/2 of the lists
        (
            2,
            0.1,
            {"itemcoverage": 0.75, "averagepopularity": 3.5, "giniindex": 0.375, "tailpercentage": 0.25},
        ),
        # tail above 1: seen items with at most 3 interactions (items 2 and 3): 1/2 of each list
        (2, 3, {"itemcoverage": 0.75, "averagepopularity": 3.5, "giniindex": 0.375, "tailpercentage": 0.5}),
        # top 1: item 0 twice; counts sorted [0, 0, 0, 2] -> (2*4 - 5) * 2 / (4 * 2)
        (1, 0.1, {"itemcoverage": 0.25, "averagepopularity": 5.0, "giniindex": 0.75, "tailpercentage": 0.0}),
    ],
)
def test_hand_computed_fixture(k, tail_ratio, expected):
    acc = BeyondAccuracy(POPULARITY, ks=(k,), tail_ratio=tail_ratio)
    acc.add(LISTS, np.ones_like(LISTS, dtype=bool))
    result = acc.result()
    for name, value in expected.items():
        assert result[f"{name}@{k}"] == pytest.approx(value), name


@pytest.mark.parametrize(
    "ratio,expected",
    [(0.1, [False, False, True, False]), (0.7, [False, False, True, True]), (4, [False, False, True, True])],
)
def test_tail_items_are_recboles(ratio, expected):
    # ratio 0.7 of the 3 seen items: int(2.1) = 2 least popular (items 2, 3); ratio 4: counts <= 4
    assert tail_items(POPULARITY, ratio).tolist() == expected


def _dense_reference(user_emb, item_emb, train, users, popularity, k, tail):
    scores = (user_emb @ item_emb.T).numpy()
    scores[train[:, 0], train[:, 1]] = -np.inf
    lists = [np.argsort(-scores[u], kind="stable")[:k] for u in users]
    counts = np.bincount(np.concatenate(lists), minlength=len(popularity))
    n = len(popularity)
    ranked = np.sort(counts)
    return {
        f"itemcoverage@{k}": (counts > 0).mean(),
        f"averagepopularity@{k}": np.mean([popularity[lst].mean() for lst in lists]),
        f"giniindex@{k}": ((2 * np.arange(1, n + 1) - n - 1) * ranked).sum() / (n * counts.sum()),
        f"tailpercentage@{k}": np.mean([tail[lst].mean() for lst in lists]),
    }


@pytest.mark.parametrize("seed,chunk", [(0, 7), (1, 1000), (2, 1)])
def test_chunked_evaluation_gives_the_dense_lists_metrics(seed, chunk):
    gen = torch.Generator().manual_seed(seed)
    user_emb, item_emb = torch.randn(40, 5, generator=gen), torch.randn(60, 5, generator=gen)
    rng = np.random.default_rng(seed)
    train = np.unique(np.stack([rng.integers(0, 40, 400), rng.integers(0, 60, 400)], 1), axis=0)
    held = np.stack([np.arange(40), rng.integers(0, 60, 40)], 1)
    held = held[~(held[:, None, :] == train[None]).all(-1).any(1)]
    popularity = np.bincount(train[:, 1], minlength=60)
    acc = BeyondAccuracy(popularity, ks=(5, 20))
    plain = evaluate_embeddings(user_emb, item_emb, [train], held, ks=(5, 20), chunk_users=chunk)
    result = evaluate_embeddings(user_emb, item_emb, [train], held, ks=(5, 20), chunk_users=chunk, beyond=acc)
    for name, values in plain.per_user.items():  # the accuracy metrics do not change
        assert np.array_equal(values, result.per_user[name])
    tail = tail_items(popularity).astype(float)
    for k in (5, 20):
        expected = _dense_reference(user_emb, item_emb, train, np.unique(held[:, 0]), popularity, k, tail)
        got = acc.result()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("n", [9, 10, 11])
def test_item_popularity_groups_are_thirds_and_a_top_fifth(n):
    counts = np.arange(n)[::-1] % 4  # ties broken by id
    groups = item_popularity_groups(counts)
    sizes = groups["popularity"].value_counts().reindex(["tail", "medium", "head"]).tolist()
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    order = np.lexsort((np.arange(n), counts))
    assert groups.loc[order[-1], "popularity"] == "head" and groups.loc[order[0], "popularity"] == "tail"
    assert (groups["head20"] == "top20").sum() == round(0.2 * n)
    assert set(groups.loc[order[-round(0.2 * n) :], "head20"]) == {"top20"}
