"""Amazon subset of the HIN datasets for recommendation (Shi, Hu, Zhao and Yu, "Heterogeneous
Information Network Embedding for Recommendation" (HERec), TKDE'18).

Files, 0-based ids: ``user_item.dat`` (user, item, rating, timestamp; tab-separated) and the
comma-separated pair files ``item_view.dat`` (item, view node), ``item_category.dat`` and
``item_brand.dat``. The item-item ``coview`` relation links distinct items sharing a view
node, both directions, built as the pattern of ``M @ M.T`` of the item x view incidence matrix.
1,435 items have a view row; 1,174 of them share a view node with another item (``extra``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pmtrec_lab.data.sources._io import (
    Column,
    co_membership_pairs,
    count_unique_pairs,
    encode_labels,
    read_table,
    require_files,
)
from pmtrec_lab.data.types import Membership, RawDataset, RawLabels

FILES = ("user_item.dat", "item_view.dat", "item_category.dat", "item_brand.dat")


def load_raw(root: Path) -> RawDataset:
    """Read the HERec Amazon release from ``root``."""
    root = Path(root)
    require_files(root, FILES, "amazon")
    ui = read_table(
        root / "user_item.dat",
        [Column("user"), Column("item"), Column("rating", "float"), Column("timestamp", "int")],
        allow_empty=False,
    )
    iv = read_table(root / "item_view.dat", [Column("item"), Column("view")], sep=",")
    ic = read_table(root / "item_category.dat", [Column("item"), Column("category")], sep=",")
    ib = read_table(root / "item_brand.dat", [Column("item"), Column("brand")], sep=",")

    users, items = ui["user"], ui["item"]
    cat_codes, cat_vocab = encode_labels(ic["category"])
    brand_codes, brand_vocab = encode_labels(ib["brand"])
    src, dst = co_membership_pairs(iv["item"], iv["view"])
    raw_counts: dict[str, int | str] = {
        "users": int(np.unique(users).size),
        "items": int(np.unique(items).size),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(users)),
        "views": int(len(iv["item"])),
        "view_nodes": int(np.unique(iv["view"]).size),
        "categories": int(len(cat_vocab)),
        "category_rows": int(len(cat_codes)),
        "brands": int(len(brand_vocab)),
    }
    return RawDataset(
        name="amazon",
        users=users,
        items=items,
        ratings=ui["rating"],
        item_relations={"coview": (src, dst)},
        memberships={"coview": Membership(entity=iv["item"], group=iv["view"])},
        labels={
            "category": RawLabels(
                side="item",
                entity=ic["item"],
                label=cat_codes,
                names=[f"category_{c}" for c in cat_vocab.tolist()],
                multi=True,
            ),
            "brand": RawLabels(
                side="item",
                entity=ib["item"],
                label=brand_codes,
                names=[f"brand_{b}" for b in brand_vocab.tolist()],
                multi=False,
            ),
        },
        raw_counts=raw_counts,
        extra={
            "timestamps": ui["timestamp"],
            # Items with a view row (1,435) vs items with a co-view partner (fewer: some view nodes
            # hold a single item, which links nothing).
            "view_items": int(np.unique(iv["item"]).size),
            "coview_items": int(np.unique(src).size),
            "coview_pairs": int(len(src) // 2),
        },
    )
