"""Beyond-accuracy metrics of a full ranking, as RecBole 1.2.1 defines them (Zhao et al., CIKM
2021; ``recbole/evaluator/metrics.py``), and item popularity groups.

Computed from the top-``max(ks)`` lists the chunked evaluation already ranks
(:func:`pmtrec_lab.eval.evaluator.evaluate_embeddings` passes each chunk to
:meth:`BeyondAccuracy.add`), so there is no second pass over the scores. ``popularity[i]`` is item
``i``'s number of training interactions (RecBole's ``data.count_items``). Over the evaluated users
``U`` with top-k lists ``R_u``:

- ``itemcoverage@k`` (RecBole ``ItemCoverage``): distinct items in all ``R_u`` over the number of
  items. RecBole counts its padding id in the number of items (``n + 1``); here ``n`` is the
  dataset's items.
- ``averagepopularity@k`` (``AveragePopularity``): mean over users of the mean popularity of
  ``R_u``; items without training interactions count 0.
- ``giniindex@k`` (``GiniIndex``): with ``P_(1) <= ... <= P_(n)`` the times each item appears in
  the lists (0 for items never recommended), ``sum_i (2i - n - 1) P_(i) / (n sum_i P_(i))``.
- ``tailpercentage@k`` (``TailPercentage``): mean over users of the share of ``R_u`` that are
  tail items. RecBole's tail (``tail_ratio``, default 0.1): for a ratio in (0, 1], the
  ``max(1, floor(ratio * m))`` items with the fewest training interactions among the ``m`` items
  that have any (ties broken by the lower id); for a ratio above 1, the items with at most that
  many training interactions (and at least one). Items never seen in training are not tail.

A list position whose score was -inf (fewer candidate items than k) holds no item and counts in
none of them (RecBole would rank a masked item there).

Item popularity groups (:func:`item_popularity_groups`): thirds of the items by training
interactions (``tail`` < ``medium`` < ``head``, ranked by count then id, the larger groups first)
and the top 20% (``top20``, the rest ``rest80``), as the user activity thirds are made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_TAIL_RATIO",
    "ITEM_LEVELS",
    "BeyondAccuracy",
    "item_group_metrics",
    "item_popularity_groups",
    "tail_items",
]

#: RecBole's default ``tail_ratio`` (the least popular 10% of the items seen in training)
DEFAULT_TAIL_RATIO = 0.1

#: item popularity thirds, least popular first
ITEM_LEVELS = ("tail", "medium", "head")


def tail_items(popularity: np.ndarray, tail_ratio: float = DEFAULT_TAIL_RATIO) -> np.ndarray:
    """Boolean mask of RecBole's long-tail items (module docstring)."""
    popularity = np.asarray(popularity, dtype=np.int64)
    if tail_ratio <= 0:
        tail_ratio = 0.1  # RecBole's default for a missing or non-positive ratio
    seen = np.flatnonzero(popularity > 0)
    mask = np.zeros(popularity.shape[0], dtype=bool)
    if tail_ratio > 1:
        mask[seen[popularity[seen] <= tail_ratio]] = True
        return mask
    order = seen[np.lexsort((seen, popularity[seen]))]  # by count, then id
    cut = max(int(len(order) * tail_ratio), 1) if len(order) else 0
    mask[order[:cut]] = True
    return mask


class BeyondAccuracy:
    """Accumulates the beyond-accuracy metrics over the chunks of one evaluation."""

    def __init__(self, popularity: np.ndarray, ks: Sequence[int], tail_ratio: float = DEFAULT_TAIL_RATIO):
        self.popularity = np.asarray(popularity, dtype=np.float64)
        self.tail = tail_items(popularity, tail_ratio).astype(np.float64)
        self.ks = tuple(int(k) for k in ks)
        n = self.popularity.shape[0]
        self.counts = {k: np.zeros(n, dtype=np.int64) for k in self.ks}
        self.pop_sum = dict.fromkeys(self.ks, 0.0)
        self.tail_sum = dict.fromkeys(self.ks, 0.0)
        self.users = 0

    def add(self, idx: np.ndarray, valid: np.ndarray) -> None:
        """One chunk's ranked lists: ``idx`` [users, kmax] item ids, ``valid`` [users, kmax] bool."""
        self.users += idx.shape[0]
        for k in self.ks:
            items, ok = idx[:, :k], valid[:, :k]
            self.counts[k] += np.bincount(items[ok], minlength=self.counts[k].shape[0])
            length = np.maximum(ok.sum(axis=1), 1)
            self.pop_sum[k] += float((np.where(ok, self.popularity[items], 0.0).sum(axis=1) / length).sum())
            self.tail_sum[k] += float((np.where(ok, self.tail[items], 0.0).sum(axis=1) / length).sum())

    def result(self) -> dict[str, float]:
        """``itemcoverage@k``, ``averagepopularity@k``, ``giniindex@k``, ``tailpercentage@k``."""
        out: dict[str, float] = {}
        n = self.popularity.shape[0]
        for k in self.ks:
            counts = self.counts[k]
            total = counts.sum()
            ranked = np.sort(counts)
            gini = (
                float(((2 * np.arange(1, n + 1) - n - 1) * ranked).sum() / (n * total)) if total else np.nan
            )
            users = max(self.users, 1)
            out[f"itemcoverage@{k}"] = float((counts > 0).sum() / n) if n else np.nan
            out[f"averagepopularity@{k}"] = self.pop_sum[k] / users if self.users else np.nan
            out[f"giniindex@{k}"] = gini
            out[f"tailpercentage@{k}"] = self.tail_sum[k] / users if self.users else np.nan
        return out


def item_popularity_groups(popularity: np.ndarray) -> pd.DataFrame:
    """Per item (index ``item``): ``train_count``, ``popularity`` (ordered thirds ``tail`` <
    ``medium`` < ``head`` by (count, id), sizes differing by at most one, the larger first) and
    ``head20`` (``top20`` for the 20% most interacted items by (count, id), else ``rest80``)."""
    counts = np.asarray(popularity, dtype=np.int64)
    n = counts.shape[0]
    ids = np.arange(n, dtype=np.int64)
    order = np.lexsort((ids, counts))  # least popular first
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    sizes = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
    bounds = np.cumsum(sizes)
    third = np.searchsorted(bounds, rank, side="right")
    head_start = n - int(round(0.2 * n))
    frame = pd.DataFrame(
        {
            "train_count": counts,
            "popularity": pd.Categorical.from_codes(third, categories=list(ITEM_LEVELS), ordered=True),
            "head20": np.where(rank >= head_start, "top20", "rest80"),
        },
        index=pd.Index(ids, name="item"),
    )
    return frame


def item_group_metrics(
    per_item: pd.DataFrame, groups: pd.DataFrame
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean of each per-item metric (``eval.items``) within each item group: ``{column: {level:
    {metric: mean, ..., "items": n}}}`` for ``popularity`` (thirds) and ``head20``, over the items
    with held-out pairs; every level appears (NaN means, 0 items when empty)."""
    metrics = [c for c in per_item.columns if "@" in c]
    labelled = per_item.merge(groups, left_on="item", right_index=True, how="left")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for column, levels in (("popularity", list(ITEM_LEVELS)), ("head20", ["rest80", "top20"])):
        out[column] = {}
        for level in levels:
            part = labelled[labelled[column] == level]
            entry = {m: (float(part[m].mean()) if len(part) else float("nan")) for m in metrics}
            entry["items"] = int(len(part))
            out[column][level] = entry
    return out
