"""Full-ranking top-K metrics, as RecBole defines them, with deterministic tie-breaking.

Definitions follow RecBole (Zhao et al., "RecBole: Towards a Unified, Comprehensive and Efficient
Framework for Recommendation Algorithms", CIKM 2021), for a user with test set T and top-K list
r_1..r_K (rank from 1):

- Recall@K    = |hits in top K| / |T|
- Precision@K = |hits in top K| / K
- Hit@K       = 1 if any hit in top K, else 0
- MRR@K       = 1 / rank of the first hit within K (0 if none)
- NDCG@K      = DCG@K / IDCG@K with DCG@K = sum_{j <= K, r_j in T} 1 / log2(j + 1) and the ideal
  DCG taken over min(|T|, K) items.

Ranking protocol (``../shared/docs/pmtrec-method.md``, "Evaluation protocol"): every item is
ranked; excluded items (training items, and validation items at test time) can never appear in a
list; ties are broken towards the lower item index, so results do not depend on the kernel
``torch.topk`` happens to use. When fewer than K items can be ranked, the missing positions are
misses. Users without relevant items are not ranked; callers count them separately.

Implementation (fully vectorized over users): one ``torch.topk`` of K + 1 values on the masked
scores (excluded items at -inf). A row's top-K set is unique unless its (K+1)-th value equals its
K-th one (a tie across the boundary) or the K-th value is -inf (fewer than K finite rankable scores;
genuine -inf scores could tie with the fill of excluded items). Only such rows take an exact, still
vectorized, path that picks the boundary-tied items by index with a second ``topk`` on -index.
Lists with equal scores inside (and the recomputed ones) are then ordered by (score descending,
index ascending) with two small sorts, the second stable. On continuous scores the cost over a
bare ``topk`` is one extra value per row and a few K-wide operations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

METRIC_NAMES: tuple[str, ...] = ("recall", "ndcg", "precision", "hit", "mrr")


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate cutoffs: positive integers, returned sorted and without duplicates."""
    out = []
    for k in ks:
        if isinstance(k, bool) or int(k) != k or int(k) < 1:
            raise ValueError(f"cutoffs must be positive integers, got {list(ks)!r}")
        out.append(int(k))
    if not out:
        raise ValueError("at least one cutoff K is required")
    return tuple(sorted(set(out)))


def metric_keys(ks: Sequence[int]) -> list[str]:
    """Metric names in output order: for each K, ``recall@K``, ``ndcg@K``, ``precision@K``, ``hit@K``,
    ``mrr@K``."""
    return [f"{name}@{k}" for k in check_ks(ks) for name in METRIC_NAMES]


def _order_within(idx: Tensor, valid: Tensor, row_ids: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Order each row's selected items by (score desc, index asc); invalid slots stay last.

    ``idx`` [R, k] holds item indices of rows ``row_ids`` of ``scores`` [U, I], ``valid`` [R, k]
    marks real entries. Sorting by index first, then a stable sort on the negated score, gives the
    lexicographic order; invalid slots get the largest index and a +inf key, so they sort after all
    valid entries (a stable sort keeps them after valid entries with the same +inf key).
    """
    big = torch.iinfo(torch.int64).max
    idx_key = torch.where(valid, idx, torch.full_like(idx, big))
    idx_key, perm = torch.sort(idx_key, dim=1)
    valid = valid.gather(1, perm)
    safe_idx = torch.where(valid, idx_key, torch.zeros_like(idx_key))
    neg = -scores[row_ids.unsqueeze(1), safe_idx]
    neg = torch.where(valid, neg, torch.full_like(neg, float("inf")))
    _, perm2 = torch.sort(neg, dim=1, stable=True)
    return safe_idx.gather(1, perm2), valid.gather(1, perm2)


def _exact_rows(
    masked: Tensor, top_vals: Tensor, top_idx: Tensor, k: int, exclude_of: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """Exact top-k selection for rows with a tie at the boundary (or a -inf boundary).

    ``top_vals``/``top_idx`` are the rows' sorted ``topk`` output (at least k columns). With v the
    k-th value, the items scoring strictly above v are exactly that output's prefix of values > v.
    The remaining slots go to the lowest-indexed items scoring exactly v: a second ``topk`` on the
    key -index (where tied, else -inf) finds them in ascending index order, in three passes over
    the rows whatever the number of ties. Slots that no tied item fills are invalid (misses).
    Excluded items are -inf in ``masked``, so they can only tie where v is -inf: only those rows ask
    ``exclude_of`` (row positions -> [n, I] bool) for their mask, to tell excluded items from
    genuine -inf scores.
    Returns ``idx`` [R, k] and ``valid`` [R, k] in arbitrary within-row order.
    """
    num_items = masked.shape[1]
    device = masked.device
    kth = top_vals[:, k - 1]
    n_above = (top_vals[:, :k] > kth.unsqueeze(1)).sum(1, keepdim=True)
    tied = masked == kth.unsqueeze(1)
    neg_rows = torch.isneginf(kth).nonzero(as_tuple=True)[0]
    if neg_rows.numel() > 0:
        tied[neg_rows] &= ~exclude_of(neg_rows).to(device=device, dtype=torch.bool)
    key_dtype = torch.float32 if num_items <= 2**24 else torch.float64  # -index exactly representable
    neg_index = -torch.arange(num_items, dtype=key_dtype, device=device)
    key = torch.where(tied, neg_index, torch.tensor(float("-inf"), dtype=key_dtype, device=device))
    del tied
    tie_vals, tie_idx = torch.topk(key, k, dim=1, largest=True, sorted=True)
    del key
    slot = torch.arange(k, device=device).unsqueeze(0)
    take_above = slot < n_above
    tie_pos = (slot - n_above).clamp(min=0)
    idx = torch.where(take_above, top_idx[:, :k], tie_idx.gather(1, tie_pos))
    valid = take_above | torch.isfinite(tie_vals.gather(1, tie_pos))
    return idx, valid


def rank_masked(masked: Tensor, k: int, exclude_of: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Top-k of scores whose excluded entries already hold -inf (see :func:`rank_top_k`).

    ``exclude_of(rows)`` returns the bool exclusion mask [len(rows), I] of the given row positions;
    it is called only for rows whose k-th value is -inf (fewer than k finite rankable scores), the
    one case where excluded items and genuine -inf scores must be told apart. The evaluator uses
    this form to avoid a dense exclusion mask.

    One ``torch.topk`` with k + 1 values finds the boundary: a row's selection is unique unless its
    (k+1)-th value equals its k-th one (a tie across the boundary) or the k-th value is -inf; only
    those rows take the exact path. NaN scores raise (``topk`` ranks NaN first, so row maxima show
    them without an extra pass).
    """
    num_users, num_items = masked.shape
    device = masked.device
    kk = min(k, num_items)
    if num_users == 0 or kk == 0:
        return (torch.zeros((num_users, k), dtype=torch.int64, device=device),
                torch.zeros((num_users, k), dtype=torch.bool, device=device))
    vals, idx = torch.topk(masked, min(kk + 1, num_items), dim=1, largest=True, sorted=True)
    if torch.isnan(vals[:, 0]).any():
        raise ValueError("scores contain NaN; a model that produces NaN cannot be ranked")
    kth = vals[:, kk - 1]
    ambiguous = torch.isneginf(kth)
    if kk < num_items:
        ambiguous |= vals[:, kk] == kth
    rows = ambiguous.nonzero(as_tuple=True)[0]
    valid = torch.ones((num_users, kk), dtype=torch.bool, device=device)
    top = vals[:, :kk]
    # ``topk`` output is already in descending score order; only rows with equal adjacent values need
    # reordering by index (plus the exactly recomputed rows, whose order is arbitrary).
    reorder = ambiguous
    if kk > 1:
        reorder = reorder | (top[:, 1:] == top[:, :-1]).any(1)
    if rows.numel() == num_users:
        idx, valid = _exact_rows(masked, vals, idx, kk, exclude_of)
    elif rows.numel() > 0:
        e_idx, e_valid = _exact_rows(masked[rows], vals[rows], idx[rows], kk, lambda r: exclude_of(rows[r]))
        idx = idx[:, :kk].clone()
        idx[rows] = e_idx
        valid[rows] = e_valid
    else:
        idx = idx[:, :kk]
    fix = reorder.nonzero(as_tuple=True)[0]
    if fix.numel() == num_users:
        idx, valid = _order_within(idx, valid, fix, masked)
    elif fix.numel() > 0:
        f_idx, f_valid = _order_within(idx[fix], valid[fix], fix, masked)
        idx = idx.clone()
        idx[fix] = f_idx
        valid[fix] = f_valid
    if kk < k:
        pad = k - kk
        idx = torch.cat([idx, torch.zeros((num_users, pad), dtype=idx.dtype, device=device)], 1)
        valid = torch.cat([valid, torch.zeros((num_users, pad), dtype=torch.bool, device=device)], 1)
    return idx, valid


def rank_top_k(scores: Tensor, exclude: Tensor, k: int, inplace: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k item indices per row, excluded items removed, ties towards the lower item index.

    Returns ``idx`` [U, k] (int64) and ``valid`` [U, k] (bool): position j of row u holds the item
    ranked j + 1 when ``valid[u, j]``; invalid positions (fewer than k rankable items) are misses.
    With ``inplace=True`` the excluded entries of ``scores`` are overwritten with -inf (saves one
    U x I copy). -0.0 and 0.0 compare equal, so they tie like any equal scores.
    """
    if scores.dim() != 2 or exclude.shape != scores.shape:
        raise ValueError(f"scores and exclude must be [U, I] of one shape, got {tuple(scores.shape)} "
                         f"and {tuple(exclude.shape)}")
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
        inplace = True
    exclude = exclude.to(device=scores.device, dtype=torch.bool)
    fill = float("-inf")
    masked = scores.masked_fill_(exclude, fill) if inplace else scores.masked_fill(exclude, fill)
    return rank_masked(masked, k, lambda rows: exclude[rows])


def metrics_from_hits_np(
    hits: np.ndarray, num_relevant: np.ndarray, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-user RecBole metrics from a hit matrix [U, Kmax] (bool, rank order) and |T| per user.

    All users must have ``num_relevant >= 1``. Values are float64. Computed with NumPy: the arrays
    are small (users x Kmax), and torch's multi-threaded kernels cost more in synchronization than
    in work at this size, badly so on a busy machine.
    """
    ks = check_ks(ks)
    hits = np.asarray(hits, dtype=bool)
    kmax = hits.shape[1]
    if ks[-1] > kmax:
        raise ValueError(f"hit matrix has {kmax} columns, fewer than the largest K {ks[-1]}")
    num_relevant = np.asarray(num_relevant, dtype=np.int64)
    h = hits.astype(np.float64)
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    ideal_cum = np.cumsum(discount)
    # argmax returns the first maximal position: the rank of the first hit where there is one.
    first_rank = np.where(hits.any(1), hits.argmax(1) + 1, kmax + 1).astype(np.float64)
    n_rel = num_relevant.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hk = h[:, :k].sum(1)
        dcg = h[:, :k] @ discount[:k]
        idcg = ideal_cum[np.clip(np.minimum(num_relevant, k) - 1, 0, None)]
        out[f"recall@{k}"] = hk / n_rel
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"precision@{k}"] = hk / k
        out[f"hit@{k}"] = (hk > 0).astype(np.float64)
        out[f"mrr@{k}"] = np.where(first_rank <= k, 1.0 / first_rank, 0.0)
    return out


def metrics_from_hits(hits: Tensor, num_relevant: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Tensor form of :func:`metrics_from_hits_np`: float64 tensors on the device of ``hits``."""
    values = metrics_from_hits_np(hits.cpu().numpy(), num_relevant.cpu().numpy(), ks)
    return {name: torch.from_numpy(v).to(hits.device) for name, v in values.items()}


def full_ranking_metrics(
    scores: Tensor,
    exclude: Tensor,
    relevant: Tensor,
    ks: Sequence[int] = (10, 20, 50),
    *,
    _inplace: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Full-ranking metrics for every user that has at least one relevant item.

    Args:
        scores: [U, I] float scores (higher is better). Not modified.
        exclude: [U, I] bool, items that can never be ranked (training items; validation items at
            test time).
        relevant: [U, I] bool, the test (or validation) items. A relevant item that is also excluded
            still counts in |T| (it can never be hit), as in RecBole.
        ks: cutoffs, e.g. (10, 20, 50).

    Returns:
        ``(users, values)``: ``users`` is the int64 tensor of evaluated row indices (rows with a
        relevant item, ascending); ``values[name]`` is a float64 tensor aligned with ``users`` for
        each name of :func:`metric_keys` (``"recall@10"``, ``"ndcg@10"``, ...). Rows without a
        relevant item are skipped: the caller counts them, they are not averaged in.
    """
    ks = check_ks(ks)
    if relevant.shape != scores.shape:
        raise ValueError(f"relevant must be {tuple(scores.shape)}, got {tuple(relevant.shape)}")
    relevant = relevant.to(device=scores.device, dtype=torch.bool)
    num_rel = relevant.sum(1)
    users = (num_rel > 0).nonzero(as_tuple=True)[0]
    inplace = _inplace
    if users.numel() != scores.shape[0]:
        scores, exclude, relevant, num_rel = scores[users], exclude[users], relevant[users], num_rel[users]
        inplace = True  # the row selection made copies
    idx, valid = rank_top_k(scores, exclude, ks[-1], inplace=inplace)
    hits = relevant.gather(1, idx) & valid
    return users, metrics_from_hits(hits, num_rel, ks)
