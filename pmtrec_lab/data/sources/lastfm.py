"""hetrec2011-lastfm-2k (Cantador, Brusilovsky and Kuflik, "2nd Workshop on Information
Heterogeneity and Fusion in Recommender Systems (HetRec 2011)", RecSys'11).

Tab-separated files with a header line: ``user_artists.dat`` (userID, artistID, weight = play
count, kept as the rating), ``user_friends.dat`` (userID, friendID; both directions listed),
``user_taggedartists.dat`` (userID, artistID, tagID, day, month, year) and ``tags.dat``
(tagID, tagValue; Latin-1). ``artists.dat`` and ``user_taggedartists-timestamps.dat`` are not
needed. Tag labels: one (artist, tag) row per tag assignment, duplicates kept (preprocessing
de-duplicates and keeps the 100 tags used on the most distinct artists).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pmtrec_lab.data.sources._io import Column, count_unique_pairs, encode_labels, read_table, require_files
from pmtrec_lab.data.types import RawDataset, RawLabels

FILES = ("user_artists.dat", "user_friends.dat", "user_taggedartists.dat", "tags.dat")
TOP_TAGS = 100


def load_raw(root: Path) -> RawDataset:
    """Read the hetrec2011-lastfm-2k release from ``root``."""
    root = Path(root)
    require_files(root, FILES, "lastfm")
    ua = read_table(
        root / "user_artists.dat",
        [Column("user"), Column("artist"), Column("weight", "float")],
        header=True,
        header_names=["userID", "artistID", "weight"],
        allow_empty=False,
    )
    uf = read_table(
        root / "user_friends.dat",
        [Column("user"), Column("friend")],
        header=True,
        header_names=["userID", "friendID"],
    )
    uta = read_table(
        root / "user_taggedartists.dat",
        [
            Column("user"),
            Column("artist"),
            Column("tag"),
            Column("day", "int"),
            Column("month", "int"),
            Column("year", "int"),
        ],
        header=True,
        header_names=["userID", "artistID", "tagID"],
    )
    tags = read_table(
        root / "tags.dat",
        [Column("tag"), Column("value", "str")],
        header=True,
        encoding="latin-1",
        header_names=["tagID", "tagValue"],
    )
    users, items = ua["user"], ua["artist"]
    codes, vocab = encode_labels(uta["tag"])
    tag_names = pd.Series(tags["value"], index=tags["tag"])
    tag_names = tag_names[~tag_names.index.duplicated()]
    looked_up = tag_names.reindex(vocab)
    fallback = pd.Series([f"tag_{t}" for t in vocab.tolist()], index=vocab)
    names = looked_up.fillna(fallback).astype(str).tolist()
    raw_counts: dict[str, int | str] = {
        "users": int(np.unique(users).size),
        "items": int(np.unique(items).size),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(users)),
        "friends": int(len(uf["user"])),
        "tags": int(len(vocab)),
        "tag_assignments": int(len(codes)),
    }
    return RawDataset(
        name="lastfm",
        users=users,
        items=items,
        ratings=ua["weight"].astype(np.float64),
        user_relations={"friends": (uf["user"], uf["friend"])},
        labels={
            "tag": RawLabels(
                side="item", entity=uta["artist"], label=codes, names=names, multi=True, top_k=TOP_TAGS
            )
        },
        raw_counts=raw_counts,
    )
