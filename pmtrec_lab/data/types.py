"""Data containers shared by loaders, preprocessing, graphs, tasks and the trainer.

Two stages:
- ``RawDataset``: what a loader read from a release, in file order, with raw ids and the raw
  counts of ``../shared/datasets/README.md`` (``raw_counts``). No filtering.
- ``RecDataset``: after preprocessing (implicit feedback, de-duplication, k-core, contiguous
  0-based ids, relations and labels restricted to kept entities, self-loops dropped) and the
  per-user split. This is what graphs, tasks and the trainer use.

All id arrays are ``numpy.int64``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Side = Literal["user", "item"]


@dataclass
class RawLabels:
    """Label assignments of one label set, one row per (entity, label) pair as given.

    ``multi``: multi-label (BCE head) if True; else single-label (softmax head), reduced in
    preprocessing to each entity's most frequent label (ties to the lower label id).
    ``top_k``: keep only the ``top_k`` labels used on the most distinct kept entities, chosen
    after filtering (lastfm's 100 tags; for a single-label set, after the reduction); None keeps
    all.
    """

    side: Side
    entity: np.ndarray  # raw entity ids
    label: np.ndarray  # label ids, 0 <= label < len(names)
    names: list[str]
    multi: bool
    top_k: int | None = None


@dataclass
class RawDataset:
    """A release as read, before any filtering.

    ``user_relations`` / ``item_relations`` map a relation name (``trust``, ``friends``,
    ``coview``, ``kg``) to ``(src, dst)`` raw ids, rows as given (directed; loaders may already
    have derived pairs, e.g. co-view from item-view rows). ``memberships`` holds, for such a
    derived item relation, the ``(item, group)`` rows and group-size cap it was built from (so
    ``datasets export`` can write the groups, not the pairs). ``raw_counts`` holds exactly the
    keys and values of the datasets README's raw-count table.
    """

    name: str
    users: np.ndarray  # raw user id per interaction row, file order
    items: np.ndarray  # raw item id per interaction row, file order
    ratings: np.ndarray | None  # float per row, or None for implicit releases
    user_relations: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    item_relations: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    labels: dict[str, RawLabels] = field(default_factory=dict)
    raw_counts: dict[str, int | str] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)  # e.g. ml-100k's kg pair count
    memberships: dict[str, Membership] = field(default_factory=dict)


@dataclass
class Membership:
    """The rows an item relation was derived from: items sharing a group are linked (both
    directions), groups of more than ``max_group_size`` distinct items dropped (None: no cap)."""

    entity: np.ndarray  # raw item ids
    group: np.ndarray  # group of each row (any hashable values)
    max_group_size: int | None = None


@dataclass
class Relation:
    """A same-side relation between kept entities, directed rows, no self-loops, no duplicates."""

    name: str
    side: Side
    src: np.ndarray
    dst: np.ndarray

    def __len__(self) -> int:
        return int(self.src.shape[0])


@dataclass
class LabelSet:
    """Labels of kept entities: one row per (entity, label); single-label sets have one row per entity."""

    name: str
    side: Side
    entity: np.ndarray
    label: np.ndarray
    num_labels: int
    multi: bool
    names: list[str]

    def __len__(self) -> int:
        return int(self.entity.shape[0])


def _no_pairs() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int64)


@dataclass
class Split:
    """Per-user split of the processed interactions into [n, 2] (user, item) arrays.

    ``meta`` (PMTRec v3's meta split, ``data.meta_split``): pairs held out of ``train`` for
    held-out main-task signal during training; empty when the meta split is off. They are no
    training pairs of any method, masked at evaluation like training pairs and never sampled as
    negatives.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    train_only_users: int  # users with fewer than 3 interactions: all to training, counted
    split_seed: int
    meta: np.ndarray = field(default_factory=_no_pairs)

    def sizes(self) -> dict[str, int]:
        out = {
            "train": int(len(self.train)),
            "valid": int(len(self.valid)),
            "test": int(len(self.test)),
        }
        if len(self.meta):  # only with the meta split, so sizes without it read as before
            out["meta"] = int(len(self.meta))
        out["train_only_users"] = int(self.train_only_users)
        out["split_seed"] = int(self.split_seed)
        return out

    def observed_outside_evaluation(self) -> list[np.ndarray]:
        """The pairs a model may know while training: ``train`` and, when held out, ``meta``
        (what validation masks; test masks ``valid`` as well)."""
        return [self.train, self.meta] if len(self.meta) else [self.train]


@dataclass
class RecDataset:
    """A preprocessed, split dataset: contiguous ids 0..num_users-1 and 0..num_items-1.

    ``fingerprint`` names the data: ``load_dataset`` sets it to its cache key, a hash of the
    source files' contents, the preprocessing parameters and the cache format, whether the
    dataset came from the cache or was built, so a run can record which data it trained on
    ("" for datasets built by other means).
    """

    name: str
    num_users: int
    num_items: int
    interactions: np.ndarray  # [n, 2] unique (user, item) pairs kept
    relations: dict[str, Relation]
    labels: dict[str, LabelSet]
    split: Split
    raw_counts: dict[str, int | str]
    user_ids: np.ndarray  # raw id of each processed user
    item_ids: np.ndarray  # raw id of each processed item
    params: dict[str, object] = field(default_factory=dict)  # preprocessing parameters used
    extra: dict[str, object] = field(default_factory=dict)
    fingerprint: str = ""

    def processed_counts(self) -> dict[str, int]:
        out: dict[str, int] = {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": int(len(self.interactions)),
        }
        for name, rel in self.relations.items():
            out[name] = len(rel)
        for name, lab in self.labels.items():
            out[f"{name}_labels"] = lab.num_labels
            out[f"{name}_assignments"] = len(lab)
        return out

    def user_relation_names(self) -> list[str]:
        return [n for n, r in self.relations.items() if r.side == "user"]
