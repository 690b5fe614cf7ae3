"""Ciao and Epinions trust releases (Tang, Gao and Liu, "mTrust: discerning multi-faceted trust
in a connected world", WSDM'12; Tang et al., "eTrust", KDD'12).

Files: ``rating.mat`` (user, item, category, rating[, helpfulness]; some Epinions copies have
no helpfulness column), ``trustnetwork.mat`` (truster, trustee; Epinions has self-loops, kept
here and dropped in preprocessing) and optionally ``category.txt`` (``<id> <name>`` lines).
Category ids are 1-based in the release; labels are mapped to 0..C-1 in id order. Every rating
row contributes one (item, category) label row; preprocessing keeps each item's most frequent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pmtrec_lab.data.sources._io import (
    count_unique_pairs,
    encode_labels,
    mat_int_column,
    read_mat_matrix,
    require_files,
)
from pmtrec_lab.data.types import RawDataset, RawLabels
from pmtrec_lab.errors import DataFormatError

FILES = ("rating.mat", "trustnetwork.mat")


def read_category_names(path: Path) -> dict[int, str]:
    """``category.txt``: ``<id> <name>`` per line (CRLF; names are not all valid UTF-8)."""
    if not path.is_file():
        return {}
    names: dict[int, str] = {}
    # 28 lines: a loop over the category vocabulary, not over data rows.
    for lineno, line in enumerate(path.read_bytes().decode("latin-1").split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        key, _, name = line.partition(" ")
        if not key.isdigit():
            raise DataFormatError(path, f"expected '<category id> <name>', got {line!r}", line=lineno)
        names[int(key)] = name.strip()
    return names


def load_raw(root: Path, name: str = "ciao") -> RawDataset:
    """Read a Ciao or Epinions release from ``root`` (``<data-dir>/<name>/``)."""
    root = Path(root)
    require_files(root, FILES, name)
    rating_path = root / "rating.mat"
    rating = read_mat_matrix(rating_path)
    if rating.shape[0] == 0:
        raise DataFormatError(
            rating_path,
            "the file is empty: its matrix has no rows; expected rows of (user, item, category, "
            "rating[, helpfulness])",
        )
    if rating.shape[1] not in (4, 5):
        raise DataFormatError(
            rating_path,
            f"expected 5 columns (user, item, category, rating, helpfulness) or 4 (no helpfulness), "
            f"got {rating.shape[1]}",
        )
    users = mat_int_column(rating_path, rating, 0, "user")
    items = mat_int_column(rating_path, rating, 1, "item")
    categories = mat_int_column(rating_path, rating, 2, "category")
    ratings = rating[:, 3].astype(np.float64)

    trust_path = root / "trustnetwork.mat"
    trust = read_mat_matrix(trust_path)
    if trust.shape[0] == 0:  # an empty network (MATLAB saves it as 0 x 0): no trust rows
        trust = trust.reshape(0, 2)
    if trust.shape[1] != 2:
        raise DataFormatError(trust_path, f"expected 2 columns (truster, trustee), got {trust.shape[1]}")
    truster = mat_int_column(trust_path, trust, 0, "truster")
    trustee = mat_int_column(trust_path, trust, 1, "trustee")

    codes, vocab = encode_labels(categories)
    known = read_category_names(root / "category.txt")
    names = [known.get(int(c), f"category_{int(c)}") for c in vocab]
    item_cat = np.unique(np.stack([items, codes], axis=1), axis=0)
    _, per_item = np.unique(item_cat[:, 0], return_counts=True)

    raw_counts: dict[str, int | str] = {
        "users": int(np.unique(users).size),
        "items": int(np.unique(items).size),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(users)),
        "trust": int(len(truster)),
        "categories": int(len(vocab)),
        "multi_category_items": int((per_item > 1).sum()),
    }
    extra: dict[str, object] = {"rating_columns": int(rating.shape[1])}
    if rating.shape[1] == 5:
        extra["helpfulness"] = rating[:, 4].astype(np.float64)
    return RawDataset(
        name=name,
        users=users,
        items=items,
        ratings=ratings,
        user_relations={"trust": (truster, trustee)},
        labels={
            "category": RawLabels(side="item", entity=items.copy(), label=codes, names=names, multi=False)
        },
        raw_counts=raw_counts,
        extra=extra,
    )
