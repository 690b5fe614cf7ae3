"""Shared test material: small, real datasets (built by the real preprocessing code, not mocked)
and the datasets README's raw counts."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pmtrec_lab.data.loading import build_rec_dataset
from pmtrec_lab.data.sources.synthetic import load_raw as synthetic_raw
from pmtrec_lab.data.types import RecDataset

#: the datasets README's raw counts of each real release (``raw_counts`` of its loader)
README_RAW = {
    "ciao": {
        "users": 7375,
        "items": 105114,
        "interactions": 282650,
        "rows": 284086,
        "trust": 111781,
        "categories": 28,
        "multi_category_items": 101,
    },
    "lastfm": {
        "users": 1892,
        "items": 17632,
        "interactions": 92834,
        "rows": 92834,
        "friends": 25434,
        "tags": 9749,
        "tag_assignments": 186479,
    },
    "amazon": {
        "users": 6170,
        "items": 2753,
        "interactions": 195791,
        "rows": 195791,
        "views": 5694,
        "view_nodes": 3857,
        "categories": 22,
        "category_rows": 5508,
        "brands": 334,
    },
    "filmtrust": {
        "users": 1508,
        "items": 2071,
        "interactions": 35494,
        "rows": 35497,
        "trust": 1853,
        "trust_users": 874,
    },
}


def tiny_synthetic(num_users: int = 120, num_items: int = 80, seed: int = 0) -> RecDataset:
    raw = synthetic_raw(None, num_users=num_users, num_items=num_items, interactions_per_user=12, seed=seed)
    return build_rec_dataset(raw, k=2, rating_threshold=None, split_seed=0)


def assert_pairs_disjoint(a: np.ndarray, b: np.ndarray) -> None:
    ka = set(map(tuple, a.tolist()))
    kb = set(map(tuple, b.tolist()))
    assert not (ka & kb)


class FixedEncoder(nn.Module):
    """An encoder whose full representations are given (evaluation reads ``encoder()``)."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__()
        self.u = nn.Parameter(users)
        self.i = nn.Parameter(items)

    def forward(self):
        return self.u, self.i
