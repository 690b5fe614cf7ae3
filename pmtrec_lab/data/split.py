"""The per-user split of the evaluation protocol (../shared/docs/pmtrec-method.md).

For each user with n >= 3 interactions: n_val = n_test = max(1, floor(0.1 n)), drawn at random
with ``split_seed`` (fixed across run seeds, so runs with different seeds are paired); the rest
is training. Users with fewer than 3 interactions go to training only and are counted.

The meta split (PMTRec v3, ``docs/pmtrec-method.md``; ``data.meta_split``): afterwards, one
training pair of every user with at least ``MIN_TRAIN_FOR_META`` training pairs is moved from
``train`` to ``meta``, drawn with a stream of its own derived from ``split_seed``, so the
validation and test pairs are exactly those of the split without it.
"""

from __future__ import annotations

import numpy as np

from pmtrec_lab.data.types import Split

MIN_INTERACTIONS_FOR_SPLIT = 3
MIN_TRAIN_FOR_META = 5
#: the meta draw's stream: ``default_rng([split_seed, META_STREAM])``, independent of the split's
META_STREAM = 1


def split_per_user(pairs: np.ndarray, num_users: int, split_seed: int = 0) -> Split:
    """Split [n, 2] (user, item) pairs per user; vectorized (one lexsort, no loop over users)."""
    users = pairs[:, 0]
    rng = np.random.default_rng(split_seed)
    keys = rng.random(len(pairs))
    order = np.lexsort((keys, users))  # by user, random within user
    sorted_users = users[order]
    counts = np.bincount(users, minlength=num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(pairs)) - starts[sorted_users]
    n = counts[sorted_users]
    n_hold = np.maximum(1, n // 10)
    splittable = n >= MIN_INTERACTIONS_FOR_SPLIT
    is_test = splittable & (rank < n_hold)
    is_valid = splittable & (rank >= n_hold) & (rank < 2 * n_hold)
    is_train = ~(is_test | is_valid)

    def take(mask: np.ndarray) -> np.ndarray:
        idx = np.sort(order[mask])  # back to the dataset's order
        return pairs[idx]

    return Split(
        train=take(is_train),
        valid=take(is_valid),
        test=take(is_test),
        train_only_users=int(((counts > 0) & (counts < MIN_INTERACTIONS_FOR_SPLIT)).sum()),
        split_seed=split_seed,
    )


def hold_out_meta(split: Split, num_users: int) -> Split:
    """``split`` with one training pair per user with >= ``MIN_TRAIN_FOR_META`` training pairs
    moved to ``meta`` (seeded by ``split.split_seed``; vectorized like ``split_per_user``)."""
    train = split.train
    users = train[:, 0]
    rng = np.random.default_rng([split.split_seed, META_STREAM])
    keys = rng.random(len(train))
    order = np.lexsort((keys, users))
    counts = np.bincount(users, minlength=num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first = order[starts[counts >= MIN_TRAIN_FOR_META]]  # each eligible user's first random pair
    is_meta = np.zeros(len(train), dtype=bool)
    is_meta[first] = True
    return Split(
        train=train[~is_meta],
        valid=split.valid,
        test=split.test,
        train_only_users=split.train_only_users,
        split_seed=split.split_seed,
        meta=train[is_meta],
    )
