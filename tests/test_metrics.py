"""Evaluation: RecBole metrics against a brute-force reference, chunked evaluation, groups, Wilcoxon."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pmtrec_lab.eval import (
    EvalResult,
    evaluate_embeddings,
    full_ranking_metrics,
    group_metrics,
    user_groups,
    wilcoxon_paired,
)
from pmtrec_lab.eval.metrics import metric_keys, rank_top_k
from pmtrec_lab.eval.significance import paired_per_user


def reference_metrics(scores: np.ndarray, exclude: np.ndarray, relevant: np.ndarray, ks) -> tuple[list, dict]:
    """Pure-Python RecBole metrics: per user, sort the non-excluded items by (-score, item index)."""
    users: list[int] = []
    out: dict[str, list[float]] = {name: [] for name in metric_keys(ks)}
    num_users, num_items = scores.shape
    for u in range(num_users):
        rel = {i for i in range(num_items) if relevant[u, i]}
        if not rel:
            continue
        users.append(u)
        ranked = sorted((i for i in range(num_items) if not exclude[u, i]), key=lambda i: (-scores[u, i], i))
        for k in sorted(set(ks)):
            top = ranked[:k]
            hits = [1 if i in rel else 0 for i in top] + [0] * (k - len(top))
            n_hits = sum(hits)
            dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
            idcg = sum(1.0 / math.log2(j + 2) for j in range(min(len(rel), k)))
            first = next((j + 1 for j, h in enumerate(hits) if h), None)
            out[f"recall@{k}"].append(n_hits / len(rel))
            out[f"ndcg@{k}"].append(dcg / idcg)
            out[f"precision@{k}"].append(n_hits / k)
            out[f"hit@{k}"].append(1.0 if n_hits else 0.0)
            out[f"mrr@{k}"].append(1.0 / first if first else 0.0)
    return users, out


def random_case(rng: np.random.Generator):
    num_users = int(rng.integers(1, 14))
    num_items = int(rng.integers(1, 40))
    kind = rng.integers(0, 4)
    if kind == 0:
        scores = rng.integers(0, 3, size=(num_users, num_items)).astype(np.float32)  # heavy ties
    elif kind == 1:
        scores = rng.integers(-5, 6, size=(num_users, num_items)).astype(np.float32)
    elif kind == 2:
        scores = rng.normal(size=(num_users, num_items)).astype(np.float32)
    else:  # continuous with a tied block and signed zeros / infinities sprinkled in
        scores = rng.normal(size=(num_users, num_items)).astype(np.float32)
        special = rng.choice(np.array([0.0, -0.0, 1.5, -np.inf, np.inf], dtype=np.float32),
                             size=(num_users, num_items))
        scores = np.where(rng.random((num_users, num_items)) < 0.4, special, scores).astype(np.float32)
    exclude = rng.random((num_users, num_items)) < rng.choice([0.0, 0.3, 0.8])
    if num_users > 1:
        exclude[0] = rng.random() < 0.5  # a row with everything or nothing excluded
    relevant = rng.random((num_users, num_items)) < rng.choice([0.05, 0.2, 0.5])
    relevant[rng.random(num_users) < 0.25] = False  # users without test items
    ks = tuple(sorted(set(int(k) for k in rng.integers(1, 60, size=int(rng.integers(1, 4))))))
    return scores, exclude, relevant, ks


def assert_matches_reference(scores, exclude, relevant, ks):
    users, values = full_ranking_metrics(
        torch.from_numpy(scores), torch.from_numpy(exclude), torch.from_numpy(relevant), ks
    )
    ref_users, ref = reference_metrics(scores, exclude, relevant, ks)
    assert users.tolist() == ref_users
    assert list(values) == metric_keys(ks)
    for name, expected in ref.items():
        np.testing.assert_allclose(values[name].numpy(), np.array(expected, dtype=np.float64), atol=1e-6,
                                   rtol=0, err_msg=name)


@pytest.mark.parametrize("seed", range(300))
def test_matches_bruteforce_reference_with_ties(seed):
    scores, exclude, relevant, ks = random_case(np.random.default_rng(seed))
    assert_matches_reference(scores, exclude, relevant, ks)


@pytest.mark.parametrize("seed", range(20))
def test_float64_and_integer_scores(seed):
    scores, exclude, relevant, ks = random_case(np.random.default_rng(1000 + seed))
    assert_matches_reference(scores.astype(np.float64), exclude, relevant, ks)
    if np.isfinite(scores).all():
        assert_matches_reference(scores.astype(np.int64), exclude, relevant, ks)


def test_larger_random_cases_use_both_paths():
    rng = np.random.default_rng(123)
    num_users, num_items = 60, 300
    continuous = rng.normal(size=(num_users, num_items)).astype(np.float32)
    tied = rng.integers(0, 4, size=(num_users, num_items)).astype(np.float32)
    scores = np.where(np.arange(num_users)[:, None] % 2 == 0, continuous, tied)  # fast rows and tied rows
    exclude = rng.random((num_users, num_items)) < 0.1
    relevant = rng.random((num_users, num_items)) < 0.02
    relevant[:, 0] = True
    assert_matches_reference(scores, exclude, relevant, (10, 20, 50))


def test_hand_computed_case():
    # Item 0 is excluded; ranking of the others: 1 (0.8), 2 (0.8, tie -> after 1), 5, 3, 4.
    scores = torch.tensor([[0.9, 0.8, 0.8, 0.5, 0.1, 0.7], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    exclude = torch.tensor([[True, False, False, False, False, False], [False] * 6])
    relevant = torch.tensor([[False, False, True, False, True, False], [False] * 6])  # user 1: no test items
    users, v = full_ranking_metrics(scores, exclude, relevant, ks=(2, 5, 10))
    assert users.tolist() == [0]
    d2, d5 = 1 / math.log2(3), 1 / math.log2(6)  # hits at ranks 2 and 5
    idcg2 = 1 + 1 / math.log2(3)
    expected = {
        "recall@2": 0.5, "precision@2": 0.5, "hit@2": 1.0, "mrr@2": 0.5, "ndcg@2": d2 / idcg2,
        "recall@5": 1.0, "precision@5": 0.4, "hit@5": 1.0, "mrr@5": 0.5, "ndcg@5": (d2 + d5) / idcg2,
        # only 5 rankable items: positions 6..10 are misses
        "recall@10": 1.0, "precision@10": 0.2, "hit@10": 1.0, "mrr@10": 0.5, "ndcg@10": (d2 + d5) / idcg2,
    }
    for name, value in expected.items():
        assert v[name].item() == pytest.approx(value, abs=1e-12), name
    # The same numbers written out: (1/log2 3) / (1 + 1/log2 3) and (1/log2 3 + 1/log2 6) / (1 + 1/log2 3).
    assert v["ndcg@2"].item() == pytest.approx(0.386853, abs=1e-6)
    assert v["ndcg@5"].item() == pytest.approx(0.624051, abs=1e-6)


def test_excluded_items_never_ranked_even_when_all_scores_are_neg_inf():
    scores = torch.full((3, 8), float("-inf"))
    exclude = torch.zeros(3, 8, dtype=torch.bool)
    exclude[0, :5] = True
    exclude[1] = True
    exclude[2, ::2] = True
    idx, valid = rank_top_k(scores, exclude, k=10)
    assert idx.shape == (3, 10)
    for u in range(3):
        ranked = idx[u][valid[u]].tolist()
        assert ranked == [i for i in range(8) if not exclude[u, i]]  # -inf ties: lower index first
        assert not exclude[u, ranked].any() if ranked else True


def test_ties_go_to_lower_index_and_inputs_untouched():
    scores = torch.zeros(2, 1000)
    scores[1, 500:] = 1.0
    exclude = torch.zeros(2, 1000, dtype=torch.bool)
    exclude[:, 3] = True
    before = scores.clone()
    idx, valid = rank_top_k(scores, exclude, k=5)
    assert valid.all()
    assert idx[0].tolist() == [0, 1, 2, 4, 5]
    assert idx[1].tolist() == [500, 501, 502, 503, 504]
    assert torch.equal(scores, before)


def test_nan_scores_are_rejected():
    scores = torch.tensor([[0.1, float("nan")]])
    with pytest.raises(ValueError, match="NaN"):
        full_ranking_metrics(scores, torch.zeros(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))


def make_pairs(rng, num_users, num_items, per_user, skip_users=()):
    rows = []
    for u in range(num_users):
        if u in skip_users:
            continue
        items = rng.choice(num_items, size=min(per_user, num_items), replace=False)
        rows.append(np.stack([np.full(items.shape, u), items], 1))
    return np.concatenate(rows).astype(np.int64)


def dense(pairs, shape):
    out = np.zeros(shape, dtype=bool)
    out[pairs[:, 0], pairs[:, 1]] = True
    return out


@pytest.mark.parametrize("integer_embeddings", [False, True])
def test_evaluate_embeddings_chunking_and_reference(integer_embeddings):
    rng = np.random.default_rng(7)
    num_users, num_items, dim = 37, 90, 8
    if integer_embeddings:  # exact small-integer dot products: many ties
        user_emb = torch.from_numpy(rng.integers(-1, 2, size=(num_users, dim)).astype(np.float32))
        item_emb = torch.from_numpy(rng.integers(-1, 2, size=(num_items, dim)).astype(np.float32))
    else:
        user_emb = torch.randn(num_users, dim, generator=torch.Generator().manual_seed(0))
        item_emb = torch.randn(num_items, dim, generator=torch.Generator().manual_seed(1))
    train = make_pairs(rng, num_users, num_items, 12)
    valid = make_pairs(rng, num_users, num_items, 2)
    test = make_pairs(rng, num_users, num_items, 3, skip_users={4, 5, 30})
    ks = (5, 10, 50)
    results = [
        evaluate_embeddings(user_emb, item_emb, [train, valid], test, ks=ks, chunk_users=c)
        for c in (None, 1, 3, 7, 1000)
    ]
    base = results[0]
    assert isinstance(base, EvalResult)
    assert base.num_users_without_relevant == 3
    assert base.users.tolist() == sorted(set(range(num_users)) - {4, 5, 30})
    for other in results[1:]:
        assert np.array_equal(other.users, base.users)
        for name in base.per_user:
            assert np.array_equal(other.per_user[name], base.per_user[name]), name
    scores = (user_emb @ item_emb.T).numpy()
    exclude = dense(np.concatenate([train, valid]), scores.shape)
    ref_users, ref = reference_metrics(scores, exclude, dense(test, scores.shape), ks)
    assert base.users.tolist() == ref_users
    for name, expected in ref.items():
        np.testing.assert_allclose(base.per_user[name], expected, atol=1e-6, rtol=0, err_msg=name)
    frame = base.to_frame()
    assert list(frame.columns) == ["user", *metric_keys(ks)]
    assert len(frame) == num_users - 3
    means = base.means()
    assert means["ndcg@10"] == pytest.approx(float(np.mean(ref["ndcg@10"])), abs=1e-9)


def test_excluded_training_items_never_count():
    # Every test item is also a training item and scores highest: it must never be hit.
    num_users, num_items = 6, 20
    user_emb = torch.ones(num_users, 1)
    item_emb = torch.arange(num_items, dtype=torch.float32).unsqueeze(1)  # higher index, higher score
    pairs = np.array([[u, num_items - 1 - (u % 3)] for u in range(num_users)])
    res = evaluate_embeddings(user_emb, item_emb, [pairs], pairs, ks=(1, 5, 50))
    for name, values in res.per_user.items():
        assert np.all(values == 0.0), name
    # Without exclusion the same item is ranked within the top 3.
    res2 = evaluate_embeddings(user_emb, item_emb, [], pairs, ks=(3,))
    assert np.all(res2.per_user["hit@3"] == 1.0)


def test_evaluate_embeddings_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="item ids"):
        evaluate_embeddings(torch.zeros(2, 3), torch.zeros(4, 3), [], np.array([[0, 4]]))


def test_user_groups_thirds_and_social():
    # counts: user 0..9 -> [3, 0, 3, 1, 5, 1, 2, 0, 7, 3]
    counts = [3, 0, 3, 1, 5, 1, 2, 0, 7, 3]
    train = np.array([[u, j] for u, c in enumerate(counts) for j in range(c)], dtype=np.int64)
    groups = user_groups(train, 10, np.array([0, 3]), np.array([3, 9]))
    assert groups.index.name == "user"
    assert groups["activity"].value_counts().to_dict() == {"cold": 4, "medium": 3, "active": 3}
    # ranked by (count, id): 1, 7, 3, 5 | 6, 0, 2 | 9, 4, 8
    expected = {1: "cold", 7: "cold", 3: "cold", 5: "cold", 6: "medium", 0: "medium", 2: "medium",
                9: "active", 4: "active", 8: "active"}
    assert groups["activity"].astype(str).to_dict() == {u: expected[u] for u in range(10)}
    assert list(groups["activity"].cat.categories) == ["cold", "medium", "active"]
    assert sorted(groups.index[groups["social"] == "with_links"]) == [0, 3, 9]
    assert "social" not in user_groups(train, 10, None, None).columns
    sizes = user_groups(np.zeros((0, 2), dtype=np.int64), 11, None, None)["activity"].value_counts()
    assert sorted(sizes.tolist()) == [3, 4, 4]


def test_group_metrics_means_and_counts():
    result = EvalResult(
        users=np.array([0, 2, 5, 8]),
        per_user={"ndcg@20": np.array([0.1, 0.2, 0.3, 0.8])},
        num_users_without_relevant=6,
        ks=(20,),
    )
    counts = [3, 0, 3, 1, 5, 1, 2, 0, 7, 3]
    train = np.array([[u, j] for u, c in enumerate(counts) for j in range(c)], dtype=np.int64)
    groups = user_groups(train, 10, np.array([0]), np.array([2]))
    out = group_metrics(result, groups)
    assert out["activity"]["cold"] == {"ndcg@20": pytest.approx(0.3), "users": 1}
    assert out["activity"]["medium"]["ndcg@20"] == pytest.approx(0.15)
    assert out["activity"]["medium"]["users"] == 2
    assert out["activity"]["active"]["users"] == 1
    assert out["social"]["with_links"]["ndcg@20"] == pytest.approx(0.15)
    assert out["social"]["without_links"]["ndcg@20"] == pytest.approx(0.55)


def test_wilcoxon_sanity():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    same = wilcoxon_paired(a, a.copy())
    assert same["p_value"] == 1.0 and same["n"] == 200 and same["mean_diff"] == 0.0
    shifted = wilcoxon_paired(a + 0.05 + 0.01 * rng.standard_normal(200), a)
    assert shifted["p_value"] < 0.01
    assert shifted["mean_diff"] > 0
    with pytest.raises(ValueError):
        wilcoxon_paired(a, a[:10])


def test_paired_per_user_aligns_on_user():
    rng = np.random.default_rng(1)
    users = np.arange(100)
    va = rng.random(100)
    fa = pd.DataFrame({"user": users, "ndcg@20": va})
    fb = pd.DataFrame({"user": users[::-1], "ndcg@20": (va - 0.1)[::-1]})  # same pairs, shuffled rows
    fb = pd.concat([fb, pd.DataFrame({"user": [500], "ndcg@20": [9.0]})])
    res = paired_per_user(fa, fb, "ndcg@20")
    assert res["n"] == 100 and res["users_only_b"] == 1 and res["users_only_a"] == 0
    assert res["mean_diff"] == pytest.approx(0.1)
    assert res["p_value"] < 1e-10
