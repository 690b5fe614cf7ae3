"""Small, real datasets for unit tests (built by the real preprocessing code, not mocked)."""

from __future__ import annotations

import numpy as np

from pmtrec_lab.data.loading import build_rec_dataset
from pmtrec_lab.data.sources.synthetic import load_raw as synthetic_raw
from pmtrec_lab.data.types import RecDataset


def tiny_synthetic(num_users: int = 120, num_items: int = 80, seed: int = 0) -> RecDataset:
    raw = synthetic_raw(None, num_users=num_users, num_items=num_items, interactions_per_user=12, seed=seed)
    return build_rec_dataset(raw, k=2, rating_threshold=None, split_seed=0)


def assert_pairs_disjoint(a: np.ndarray, b: np.ndarray) -> None:
    ka = set(map(tuple, a.tolist()))
    kb = set(map(tuple, b.tolist()))
    assert not (ka & kb)
