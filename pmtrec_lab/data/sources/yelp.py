"""Yelp subset of the HIN datasets for recommendation (Shi, Hu, Zhao and Yu, "Heterogeneous
Information Network Embedding for Recommendation" (HERec), TKDE'18).

Tab-separated files with 1-based ids, converted here to 0-based, three columns in every file as
published: ``user_business.dat`` (user, business, rating), ``user_user.dat`` (user, friend, 1),
``business_category.dat`` (business, category, 1), ``business_city.dat`` (business, city, 1) and
``user_compliment.dat`` (user, compliment type, 1). The four pair files are read as pairs: the
shared reader accepts their constant third column (and copies without it) and rejects a third
column that varies. Labels: categories (item, multi), city (item, single), compliment types
(user, multi).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pmtrec_lab.data.sources._io import (
    Column,
    count_unique_pairs,
    encode_labels,
    read_table,
    require_files,
    to_zero_based,
)
from pmtrec_lab.data.types import RawDataset, RawLabels

FILES = (
    "user_business.dat",
    "user_user.dat",
    "business_category.dat",
    "business_city.dat",
    "user_compliment.dat",
)


def _read(root: Path, file: str, columns: list[Column], allow_empty: bool = True) -> dict[str, np.ndarray]:
    """Read a file and shift every id column from 1-based to 0-based."""
    path = root / file
    table = read_table(path, columns, allow_empty=allow_empty)
    for col in columns:
        if col.kind == "id":
            table[col.name] = to_zero_based(path, table[col.name], col.name)
    return table


def load_raw(root: Path) -> RawDataset:
    """Read the HERec Yelp release from ``root``."""
    root = Path(root)
    require_files(root, FILES, "yelp")
    ub = _read(
        root,
        "user_business.dat",
        [Column("user"), Column("business"), Column("rating", "float")],
        allow_empty=False,
    )
    uu = _read(root, "user_user.dat", [Column("user"), Column("friend")])
    bc = _read(root, "business_category.dat", [Column("business"), Column("category")])
    bcity = _read(root, "business_city.dat", [Column("business"), Column("city")])
    uc = _read(root, "user_compliment.dat", [Column("user"), Column("compliment")])

    users, items = ub["user"], ub["business"]
    labels: dict[str, RawLabels] = {}
    counts: dict[str, int] = {}
    for name, side, table, column, multi in (
        ("category", "item", bc, "category", True),
        ("city", "item", bcity, "city", False),
        ("compliment", "user", uc, "compliment", True),
    ):
        codes, vocab = encode_labels(table[column])
        entity = table["business" if side == "item" else "user"]
        labels[name] = RawLabels(
            side=side, entity=entity, label=codes, names=[f"{name}_{v}" for v in vocab.tolist()], multi=multi
        )
        counts[name] = int(len(vocab))
    raw_counts: dict[str, int | str] = {
        "users": int(np.unique(users).size),
        "items": int(np.unique(items).size),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(users)),
        "friends": int(len(uu["user"])),
        "categories": counts["category"],
        "cities": counts["city"],
        "compliments": counts["compliment"],
    }
    return RawDataset(
        name="yelp",
        users=users,
        items=items,
        ratings=ub["rating"],
        user_relations={"friends": (uu["user"], uu["friend"])},
        labels=labels,
        raw_counts=raw_counts,
    )
