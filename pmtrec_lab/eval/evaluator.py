"""Full-ranking evaluation of dot-product embeddings, chunked over users.

Scores are ``user_emb @ item_emb.T``. Users are processed in chunks so that the peak memory is
bounded by a few chunk x I buffers (the default chunk keeps one float32 score block under 256 MiB),
never a dense U x I matrix: on Epinions (22,164 users x 296,277 items) that is 226 users a chunk.
Each chunk's pairs are found through user-sorted arrays (a CSR layout read with ``np.searchsorted``):
excluded items are filled with -inf in place and hits are found by key membership, so no dense
mask is built (the exact tie path asks for a few rows' exclusion mask only when a K-th score is
-inf). Only users with at least one relevant item are scored; the others are
counted in :attr:`EvalResult.num_users_without_relevant`. Metric definitions: RecBole (Zhao et al.,
CIKM 2021), see :mod:`pmtrec_lab.eval.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from pmtrec_lab.eval.beyond import BeyondAccuracy
from pmtrec_lab.eval.metrics import check_ks, metric_keys, metrics_from_hits_np, rank_masked

#: Default bound on one float32 score block (chunk_users x num_items x 4 bytes).
SCORE_BLOCK_BYTES = 256 * 2**20


@dataclass
class EvalResult:
    """Per-user metrics of one evaluation.

    ``users`` holds the evaluated user ids (users with at least one relevant item, ascending),
    ``per_user[name]`` the float64 value of each metric for those users (aligned with ``users``),
    and ``num_users_without_relevant`` the users of the embedding table that had no relevant item
    (counted, not averaged). With ``evaluate_embeddings(..., with_hits=True)``, ``hits`` holds every
    retrieved relevant pair (its user, item and 1-based rank within the largest K) and
    ``num_relevant`` each evaluated user's count of distinct relevant items (aligned with
    ``users``): what per-item metrics are computed from (:mod:`pmtrec_lab.eval.items`).
    """

    users: np.ndarray
    per_user: dict[str, np.ndarray]
    num_users_without_relevant: int
    ks: tuple[int, ...] = field(default=(10, 20, 50))
    hits: RetrievedPairs | None = None
    num_relevant: np.ndarray | None = None

    @property
    def num_users_evaluated(self) -> int:
        """Number of users the means are taken over."""
        return int(self.users.shape[0])

    def means(self) -> dict[str, float]:
        """Mean of each metric over the evaluated users (NaN when no user was evaluated)."""
        return {
            name: (float(values.mean()) if values.size else float("nan"))
            for name, values in self.per_user.items()
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per evaluated user: column ``user`` then one column per metric."""
        data: dict[str, np.ndarray] = {"user": self.users}
        data.update(self.per_user)
        return pd.DataFrame(data)


@dataclass(frozen=True)
class RetrievedPairs:
    """The relevant (user, item) pairs found in the top ``max(ks)``, with their 1-based ranks."""

    users: np.ndarray
    items: np.ndarray
    ranks: np.ndarray


class _PairIndex:
    """(user, item) pairs sorted by user, so one chunk's pairs are found with two searchsorted calls."""

    def __init__(self, pairs: np.ndarray, num_users: int, num_items: int, what: str):
        pairs = _as_pairs(pairs, num_users, num_items, what)
        order = np.argsort(pairs[:, 0], kind="stable")
        self.users = np.ascontiguousarray(pairs[order, 0])
        self.items = np.ascontiguousarray(pairs[order, 1])

    def chunk(self, chunk_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row within the chunk, item) of every pair whose user is in ``chunk_users``."""
        starts = np.searchsorted(self.users, chunk_users, side="left")
        ends = np.searchsorted(self.users, chunk_users, side="right")
        lengths = ends - starts
        total = int(lengths.sum())
        offsets = np.cumsum(lengths) - lengths
        positions = np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)
        rows = np.repeat(np.arange(chunk_users.shape[0], dtype=np.int64), lengths)
        return rows, self.items[positions]


def _as_pairs(pairs: np.ndarray | None, num_users: int, num_items: int, what: str) -> np.ndarray:
    """Validate an [n, 2] integer array of (user, item) ids within range; return it as int64."""
    if pairs is None:
        return np.zeros((0, 2), dtype=np.int64)
    arr = np.asarray(pairs)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what} must be an [n, 2] array of (user, item) pairs, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    for col, size, label in ((0, num_users, "user"), (1, num_items, "item")):
        lo, hi = int(arr[:, col].min()), int(arr[:, col].max())
        if lo < 0 or hi >= size:
            raise ValueError(f"{what}: {label} ids must lie in [0, {size}), found range [{lo}, {hi}]")
    return arr


def default_chunk_users(num_items: int, block_bytes: int = SCORE_BLOCK_BYTES) -> int:
    """Users per chunk such that one float32 chunk x num_items score block fits in ``block_bytes``."""
    return max(1, block_bytes // (max(num_items, 1) * 4))


def _exclusion_of(
    rows_t: Tensor, cols_t: Tensor, chunk_size: int, num_items: int
) -> Callable[[Tensor], Tensor]:
    """Dense exclusion mask of a few chunk rows, built from the chunk's pairs on demand.

    :func:`rank_masked` asks for it only for rows whose K-th score is -inf, which real models
    rarely produce, so the common path never materializes a chunk x I mask.
    """

    def exclude_of(positions: Tensor) -> Tensor:
        slot = torch.full((chunk_size,), -1, dtype=torch.int64, device=rows_t.device)
        slot[positions] = torch.arange(positions.numel(), device=rows_t.device)
        target = slot[rows_t]
        keep = target >= 0
        block = torch.zeros((positions.numel(), num_items), dtype=torch.bool, device=rows_t.device)
        block[target[keep], cols_t[keep]] = True
        return block

    return exclude_of


def _checked_chunk_users(user_emb: Tensor, item_emb: Tensor, chunk_users: int | None) -> int:
    """The users scored at once (``chunk_users``, else the default for the item count), after
    checking that the embeddings are [U, D] and [I, D] tables of one width."""
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"embeddings must be [U, D] and [I, D], got {tuple(user_emb.shape)} and "
                         f"{tuple(item_emb.shape)}")
    if chunk_users is None:
        chunk_users = default_chunk_users(int(item_emb.shape[0]))
    if int(chunk_users) < 1:
        raise ValueError(f"chunk_users must be >= 1, got {chunk_users}")
    return int(chunk_users)


def _exclusion_index(exclude_pairs: Sequence[np.ndarray], num_users: int, num_items: int) -> _PairIndex:
    """One index over every array of ``exclude_pairs`` (a single array is taken as one), each
    checked and named by its position."""
    if isinstance(exclude_pairs, np.ndarray):
        exclude_pairs = [exclude_pairs]
    excl_list = [
        _as_pairs(p, num_users, num_items, f"exclude_pairs[{j}]") for j, p in enumerate(exclude_pairs)
    ]
    excl_all = np.concatenate(excl_list) if excl_list else None
    return _PairIndex(excl_all, num_users, num_items, "exclude_pairs")


def _chunk_hits(
    relevant: _PairIndex, chunk: np.ndarray, idx: np.ndarray, valid: np.ndarray, num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the chunk's ranked items (``idx``, [rows, K]; ``valid`` where a rank holds an
    item) are relevant, and each row's number of relevant items. By membership of (row, item)
    keys in the chunk's relevant pairs (deduplicated), so no dense relevance mask is built."""
    rel_rows, rel_cols = relevant.chunk(chunk)
    rel_keys = np.unique(rel_rows * num_items + rel_cols)
    num_rel = np.bincount(rel_keys // num_items, minlength=chunk.shape[0])
    query = np.arange(chunk.shape[0], dtype=np.int64)[:, None] * num_items + idx
    found = np.searchsorted(rel_keys, query).clip(max=max(rel_keys.shape[0] - 1, 0))
    return (rel_keys[found] == query) & valid, num_rel


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    """The chunks' per-user values in one array (an empty float64 one without chunks)."""
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float64)


def _retrieved(
    hit_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], relevant_counts: list[np.ndarray]
) -> tuple[RetrievedPairs, np.ndarray]:
    """The chunks' retrieved relevant pairs (user, item, rank) and relevant counts, joined."""
    columns = [np.concatenate([p[j] for p in hit_parts]) if hit_parts else np.zeros(0) for j in range(3)]
    retrieved = RetrievedPairs(*(c.astype(np.int64) for c in columns))
    counts = np.concatenate(relevant_counts) if relevant_counts else np.zeros(0, np.int64)
    return retrieved, counts.astype(np.int64)


def evaluate_embeddings(
    user_emb: Tensor,
    item_emb: Tensor,
    exclude_pairs: Sequence[np.ndarray],
    relevant_pairs: np.ndarray,
    ks: Sequence[int] = (10, 20, 50),
    chunk_users: int | None = None,
    device: torch.device | str | None = None,
    with_hits: bool = False,
    beyond: BeyondAccuracy | None = None,
) -> EvalResult:
    """Rank all items for every user with a relevant item and compute RecBole metrics per user.

    Args:
        user_emb: [U, D] user representations.
        item_emb: [I, D] item representations; the score of (u, i) is their dot product.
        exclude_pairs: (user, item) arrays [n, 2] of items never ranked for that user, e.g.
            ``[train]`` on validation and ``[train, valid]`` on test.
        relevant_pairs: [n, 2] (user, item) held-out items to retrieve.
        ks: cutoffs.
        chunk_users: users scored at once; by default as many as keep one float32 score block
            under 256 MiB. The result does not depend on it.
        device: where to score (defaults to ``user_emb``'s device).
        with_hits: also return the retrieved relevant pairs and each user's relevant count
            (``EvalResult.hits``, ``EvalResult.num_relevant``); the metrics do not change.
        beyond: an accumulator of beyond-accuracy metrics (``eval.beyond``) fed every chunk's
            ranked lists, so they need no second pass over the scores; read its ``result()``.

    Returns:
        :class:`EvalResult` over the users of ``relevant_pairs`` (ascending ids).
    """
    ks = check_ks(ks)
    chunk_users = _checked_chunk_users(user_emb, item_emb, chunk_users)
    num_users, num_items = int(user_emb.shape[0]), int(item_emb.shape[0])
    device = torch.device(device) if device is not None else user_emb.device
    relevant = _PairIndex(relevant_pairs, num_users, num_items, "relevant_pairs")
    excluded = _exclusion_index(exclude_pairs, num_users, num_items)
    eval_users = np.unique(relevant.users)
    dtype = user_emb.dtype if user_emb.dtype in (torch.float32, torch.float64) else torch.float32
    names = metric_keys(ks)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    hit_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    relevant_counts: list[np.ndarray] = []
    with torch.inference_mode():
        items_t = item_emb.detach().to(device=device, dtype=dtype).t()
        users_t = user_emb.detach()
        # One score buffer reused by every chunk: a fresh chunk x I allocation per chunk costs page
        # faults comparable to the ranking itself on CPU.
        buffer_rows = min(chunk_users, max(eval_users.shape[0], 1))
        buffer = torch.empty((buffer_rows, num_items), dtype=dtype, device=device)
        for start in range(0, eval_users.shape[0], chunk_users):
            chunk = eval_users[start:start + chunk_users]
            shape = (chunk.shape[0], num_items)
            rows_u = users_t[torch.from_numpy(chunk).to(users_t.device)].to(device=device, dtype=dtype)
            scores = torch.mm(rows_u, items_t, out=buffer[: shape[0]])
            rows_t, cols_t = (torch.from_numpy(x).to(device) for x in excluded.chunk(chunk))
            scores[rows_t, cols_t] = float("-inf")
            idx, valid = rank_masked(scores, ks[-1], _exclusion_of(rows_t, cols_t, shape[0], num_items))
            del scores
            if beyond is not None:
                beyond.add(idx.cpu().numpy(), valid.cpu().numpy())
            hits, num_rel = _chunk_hits(relevant, chunk, idx.cpu().numpy(), valid.cpu().numpy(), num_items)
            values = metrics_from_hits_np(hits, num_rel, ks)
            for name in names:
                parts[name].append(values[name])
            if with_hits:
                row, pos = np.nonzero(hits)
                hit_parts.append((chunk[row], idx.cpu().numpy()[row, pos], pos + 1))
                relevant_counts.append(num_rel)
    per_user = {name: _joined(parts[name]) for name in names}
    retrieved, counts = _retrieved(hit_parts, relevant_counts) if with_hits else (None, None)
    return EvalResult(
        users=eval_users.astype(np.int64),
        per_user=per_user,
        num_users_without_relevant=num_users - int(eval_users.shape[0]),
        ks=ks,
        hits=retrieved,
        num_relevant=counts,
    )
