"""FilmTrust (Guo, Zhang and Yorke-Smith, "A novel Bayesian similarity measure for recommender
systems", IJCAI'13).

Space-separated ``ratings.txt`` (user, item, rating in 0.5..4; 3 duplicated (user, item) rows)
and ``trust.txt`` (truster, trustee, 1). The trust network covers 874 user ids, some of whom
never rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pmtrec_lab.data.sources._io import Column, count_unique_pairs, read_table, require_files
from pmtrec_lab.data.types import RawDataset

FILES = ("ratings.txt", "trust.txt")


def load_raw(root: Path) -> RawDataset:
    """Read the FilmTrust release from ``root``."""
    root = Path(root)
    require_files(root, FILES, "filmtrust")
    r = read_table(
        root / "ratings.txt",
        [Column("user"), Column("item"), Column("rating", "float")],
        sep=None,
        allow_empty=False,
    )
    t = read_table(
        root / "trust.txt", [Column("truster"), Column("trustee"), Column("value", "float")], sep=None
    )
    users, items = r["user"], r["item"]
    raw_counts: dict[str, int | str] = {
        "users": int(np.unique(users).size),
        "items": int(np.unique(items).size),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(users)),
        "trust": int(len(t["truster"])),
        "trust_users": int(np.unique(np.concatenate([t["truster"], t["trustee"]])).size),
    }
    return RawDataset(
        name="filmtrust",
        users=users,
        items=items,
        ratings=r["rating"],
        user_relations={"trust": (t["truster"], t["trustee"])},
        raw_counts=raw_counts,
    )
