"""Per-item metrics of a full-ranking evaluation: how well each item's held-out pairs are retrieved.

An item is measured through the users whose held-out items it is. For item ``x`` with held-out
pairs ``P_x = {(u, x)}`` (distinct), at cutoff ``k``:

- ``recall@k``: the share of ``P_x`` whose item is ranked in the user's top ``k``;
- ``ndcg@k``: the mean over ``P_x`` of the pair's share of its user's NDCG@k, ``[r <= k] /
  log2(r + 1) / IDCG_u@k`` with ``r`` the item's rank in ``u``'s list and ``IDCG_u@k`` RecBole's
  ideal DCG of ``min(|T_u|, k)`` hits. A user's NDCG@k is the sum of these shares over their
  held-out items, so the per-item values decompose the per-user ones exactly.

The ranks come from :func:`pmtrec_lab.eval.evaluator.evaluate_embeddings` with ``with_hits=True``;
one path serves the item groups of the grid tables and the benefit map (``pmtrec_lab.benefit``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pmtrec_lab.eval.evaluator import EvalResult

__all__ = ["per_item_metrics"]


def per_item_metrics(result: EvalResult, relevant_pairs: np.ndarray, k: int = 20) -> pd.DataFrame:
    """One row per item with at least one held-out pair: ``item``, ``pairs`` (its distinct held-out
    pairs), ``recall@k`` and ``ndcg@k`` (module docstring), sorted by item id.

    ``result`` must come from ``evaluate_embeddings(..., with_hits=True)`` on the same
    ``relevant_pairs``, with ``k`` at most its largest cutoff."""
    if result.hits is None or result.num_relevant is None:
        raise ValueError("per_item_metrics needs an EvalResult from evaluate_embeddings(..., with_hits=True)")
    if k > max(result.ks):
        raise ValueError(f"k={k} exceeds the evaluation's largest cutoff {max(result.ks)}")
    pairs = np.unique(np.asarray(relevant_pairs, dtype=np.int64).reshape(-1, 2), axis=0)
    if pairs.size == 0:
        return pd.DataFrame(
            {
                "item": np.zeros(0, np.int64),
                "pairs": np.zeros(0, np.int64),
                f"recall@{k}": np.zeros(0),
                f"ndcg@{k}": np.zeros(0),
            }
        )
    # IDCG@k of each pair's user, from that user's relevant count (users are ascending ids)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    ideal = np.cumsum(discount)
    slot = np.searchsorted(result.users, pairs[:, 0])
    idcg = ideal[np.minimum(result.num_relevant[slot], k) - 1]
    # each pair's rank (0 when not retrieved in the top max(ks)), matched by a (user, item) key
    num_items = int(max(pairs[:, 1].max(), result.hits.items.max(initial=0))) + 1
    keys = pairs[:, 0] * num_items + pairs[:, 1]
    hit_keys = result.hits.users * num_items + result.hits.items
    rank = np.zeros(keys.shape[0], dtype=np.int64)
    if hit_keys.size:
        order = np.argsort(hit_keys)
        sorted_keys = hit_keys[order]
        found = np.searchsorted(sorted_keys, keys).clip(max=sorted_keys.size - 1)
        same = sorted_keys[found] == keys
        rank[same] = result.hits.ranks[order][found[same]]
    within = (rank >= 1) & (rank <= k)
    gain = np.where(within, discount[np.clip(rank - 1, 0, k - 1)], 0.0) / idcg
    items, inverse, counts = np.unique(pairs[:, 1], return_inverse=True, return_counts=True)
    return pd.DataFrame(
        {
            "item": items,
            "pairs": counts,
            f"recall@{k}": np.bincount(inverse, weights=within.astype(np.float64)) / counts,
            f"ndcg@{k}": np.bincount(inverse, weights=gain) / counts,
        }
    )
