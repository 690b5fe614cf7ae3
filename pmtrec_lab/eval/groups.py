"""User groups for metric breakdowns: activity thirds and social membership.

Protocol (``../shared/docs/pmtrec-method.md``, "Evaluation protocol"): users are split into thirds of
their training interaction counts, coldest to most active, and, where the dataset has a social
relation, into users with and without social links. The prototype found that gains came from the
most active third, so the cold-user claim is checked with these groups, not assumed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pmtrec_lab.eval.evaluator import EvalResult

ACTIVITY_LEVELS: tuple[str, ...] = ("cold", "medium", "active")
SOCIAL_LEVELS: tuple[str, ...] = ("with_links", "without_links")


def _ids(values: np.ndarray, size: int, what: str) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer user ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= size:
        raise ValueError(f"{what}: user ids must lie in [0, {size}), found range [{lo}, {hi}]")
    return arr


def user_groups(
    train_pairs: np.ndarray,
    num_users: int,
    social_src: np.ndarray | None = None,
    social_dst: np.ndarray | None = None,
) -> pd.DataFrame:
    """Group every user by training activity and, when a social relation is given, by social links.

    Args:
        train_pairs: [n, 2] (user, item) training interactions.
        num_users: number of users (ids 0..num_users-1); users without training pairs have count 0.
        social_src, social_dst: endpoints of the social links (either direction counts), or None
            when the dataset has no social relation.

    Returns:
        DataFrame indexed by ``user`` (0..num_users-1) with ``train_count``, ``activity`` (ordered
        categorical ``cold`` < ``medium`` < ``active``: users ranked by (count, user id), split into
        thirds whose sizes differ by at most one, the larger ones first) and, only with a social
        relation, ``social`` (``with_links`` for a user with any in- or out-link, else
        ``without_links``).
    """
    num_users = int(num_users)
    if num_users < 0:
        raise ValueError(f"num_users must be >= 0, got {num_users}")
    pairs = np.asarray(train_pairs)
    if pairs.size and (pairs.ndim != 2 or pairs.shape[1] != 2):
        raise ValueError(f"train_pairs must be an [n, 2] array of (user, item) pairs, got {pairs.shape}")
    users = _ids(pairs[:, 0] if pairs.size else pairs, num_users, "train_pairs")
    counts = np.bincount(users, minlength=num_users)
    ids = np.arange(num_users, dtype=np.int64)
    order = np.lexsort((ids, counts))  # by count, then by user id: deterministic thirds
    level = np.empty(num_users, dtype=np.int64)
    for j, part in enumerate(np.array_split(order, 3)):
        level[part] = j
    frame = pd.DataFrame(
        {
            "train_count": counts.astype(np.int64),
            "activity": pd.Categorical.from_codes(level, categories=list(ACTIVITY_LEVELS), ordered=True),
        },
        index=pd.Index(ids, name="user"),
    )
    if social_src is not None and social_dst is not None:
        src = _ids(social_src, num_users, "social_src")
        dst = _ids(social_dst, num_users, "social_dst")
        if src.shape != dst.shape:
            raise ValueError(f"social_src and social_dst differ in length: {src.shape[0]} vs {dst.shape[0]}")
        linked = np.zeros(num_users, dtype=bool)
        linked[src] = True
        linked[dst] = True
        frame["social"] = pd.Categorical.from_codes(
            np.where(linked, 0, 1), categories=list(SOCIAL_LEVELS), ordered=False
        )
    elif (social_src is None) != (social_dst is None):
        raise ValueError("give both social_src and social_dst, or neither")
    return frame


def group_metrics(result: EvalResult, groups: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Mean of each metric within each user group.

    Returns ``{column: {level: {metric: mean, ..., "users": n}}}`` for the categorical grouping
    columns of ``groups`` (``activity`` and ``social`` when present), over the evaluated users of
    ``result``; every level appears, with NaN means and ``users`` 0 when it has no evaluated user.
    """
    frame = result.to_frame()
    missing = ~np.isin(frame["user"].to_numpy(), groups.index.to_numpy())
    if missing.any():
        raise ValueError(f"{int(missing.sum())} evaluated users are not in the group table "
                         f"(e.g. user {int(frame['user'].to_numpy()[missing][0])})")
    metrics = list(result.per_user)
    out: dict[str, dict[str, dict[str, float]]] = {}
    columns = [c for c in ("activity", "social") if c in groups.columns]
    columns += [
        c for c in groups.columns if c not in columns and isinstance(groups[c].dtype, pd.CategoricalDtype)
    ]
    for column in columns:
        labels = groups[column].reindex(frame["user"].to_numpy())
        levels = (list(labels.cat.categories) if isinstance(labels.dtype, pd.CategoricalDtype)
                  else sorted(labels.dropna().unique()))
        label_values = labels.to_numpy()
        out[column] = {}
        for level in levels:
            sel = label_values == level
            n = int(sel.sum())
            entry: dict[str, float] = {
                m: (float(result.per_user[m][sel].mean()) if n else float("nan")) for m in metrics
            }
            entry["users"] = n
            out[column][str(level)] = entry
    return out
