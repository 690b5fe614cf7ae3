"""Per-entity facts from a dataset that the figures relate task weights to.

Kept apart from the figure builders so they stay pure (tables in, figure out): a notebook loads
the run's dataset once, calls :func:`entity_activity`, and hands the table to the figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pmtrec_lab.config import RunConfig
from pmtrec_lab.data.types import RecDataset

__all__ = ["dataset_for_config", "entity_activity", "has_social_links", "social_degree"]


def dataset_for_config(cfg: RunConfig) -> RecDataset:
    """The preprocessed dataset a run was trained on (from the loader's cache after the first time)."""
    from pmtrec_lab.data import dataset_for_config as _for_data

    return _for_data(cfg.data)


def has_social_links(ds: RecDataset) -> bool:
    """True when the dataset has a user-user relation (trust, friends) with at least one link."""
    return any(rel.side == "user" and len(rel) > 0 for rel in ds.relations.values())


def social_degree(ds: RecDataset) -> np.ndarray | None:
    """Links per user over every user-user relation, either direction counted; None without any."""
    if not has_social_links(ds):
        return None
    deg = np.zeros(ds.num_users, dtype=np.int64)
    for rel in ds.relations.values():
        if rel.side == "user":
            deg += np.bincount(rel.src, minlength=ds.num_users) + np.bincount(rel.dst, minlength=ds.num_users)
    return deg


def entity_activity(ds: RecDataset) -> pd.DataFrame:
    """One row per user and item: ``side, entity, activity`` (training interactions) and
    ``social_degree`` (users of a dataset with social links; NaN otherwise)."""
    train = ds.split.train
    users = np.bincount(train[:, 0], minlength=ds.num_users)
    items = np.bincount(train[:, 1], minlength=ds.num_items)
    deg = social_degree(ds)
    frames = [
        pd.DataFrame(
            {
                "side": "user",
                "entity": np.arange(ds.num_users, dtype=np.int64),
                "activity": users.astype(np.int64),
                "social_degree": deg.astype(float) if deg is not None else np.nan,
            }
        ),
        pd.DataFrame(
            {
                "side": "item",
                "entity": np.arange(ds.num_items, dtype=np.int64),
                "activity": items.astype(np.int64),
                "social_degree": np.nan,
            }
        ),
    ]
    return pd.concat(frames, ignore_index=True)
