"""The ml-100k loader as it was before it became ``atomic`` plus task declarations, kept verbatim as
the reference that ``tests/test_atomic.py`` compares the new loader with (processed ids,
interactions, split and task rows must be equal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pmtrec_lab.data.sources._io import (
    Column,
    co_membership_pairs,
    count_unique_pairs,
    encode_labels,
    read_table,
)
from pmtrec_lab.data.types import RawDataset, RawLabels
from pmtrec_lab.errors import DataFormatError

KG_RELATIONS = (
    "film.film.actor",
    "film.film.directed_by",
    "film.film.written_by",
    "film.film.produced_by",
    "film.film.cinematography",
    "film.film.production_companies",
    "film.film.subjects",
    "film.film.sequel",
    "film.film.prequel",
)
MAX_ENTITY_FILMS = 50

AGE_BOUNDS = np.array([18, 25, 35, 45, 50, 56])
AGE_BANDS = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]


def _read_atomic(
    path: Path, columns: list[Column], header: list[str], allow_empty: bool = True
) -> dict[str, np.ndarray]:
    return read_table(path, columns, sep="\t", header=True, header_names=header, allow_empty=allow_empty)


def legacy_load_raw(folder: Path) -> RawDataset:
    """The pre-atomic ml-100k loader, reading the five files in ``folder``."""
    folder = Path(folder)
    inter = _read_atomic(
        folder / "ml-100k.inter",
        [Column("user_id"), Column("item_id"), Column("rating", "float"), Column("timestamp", "float")],
        ["user_id", "item_id", "rating", "timestamp"],
        allow_empty=False,
    )
    user = _read_atomic(
        folder / "ml-100k.user",
        [
            Column("user_id"),
            Column("age", "int"),
            Column("gender", "str"),
            Column("occupation", "str"),
            Column("zip_code", "str"),
        ],
        ["user_id", "age", "gender", "occupation"],
    )
    item = _read_atomic(
        folder / "ml-100k.item",
        [
            Column("item_id"),
            Column("movie_title", "str"),
            Column("release_year", "str"),
            Column("class", "str"),
        ],
        ["item_id", "movie_title", "release_year", "class"],
    )
    kg = _read_atomic(
        folder / "ml-100k.kg",
        [Column("head_id", "str"), Column("relation_id", "str"), Column("tail_id", "str")],
        ["head_id", "relation_id", "tail_id"],
    )
    link = _read_atomic(
        folder / "ml-100k.link", [Column("item_id"), Column("entity_id", "str")], ["item_id", "entity_id"]
    )

    users, items = inter["user_id"], inter["item_id"]

    genres = pd.Series(item["class"], index=item["item_id"]).str.split().explode().dropna()
    genre_codes, genre_vocab = encode_labels(genres.to_numpy(dtype=str))
    occ_codes, occ_vocab = encode_labels(user["occupation"].astype(str))
    ages = user["age"]
    if (ages < 0).any():
        bad = int(np.flatnonzero(ages < 0)[0])
        raise DataFormatError(folder / "ml-100k.user", f"negative age {int(ages[bad])}", line=bad + 2)
    age_codes = np.searchsorted(AGE_BOUNDS, ages, side="right").astype(np.int64)

    src, dst, kg_items = kg_item_pairs(
        kg["head_id"], kg["relation_id"], kg["tail_id"], link["item_id"], link["entity_id"]
    )
    raw_counts: dict[str, int | str] = {
        "users": int(np.unique(users).size),
        "items": int(np.unique(items).size),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(users)),
        "genres": int(len(genre_vocab)),
        "occupations": int(len(occ_vocab)),
        "age_min": int(ages.min()) if len(ages) else 0,
        "age_max": int(ages.max()) if len(ages) else 0,
        "kg_triples": int(len(kg["head_id"])),
        "links": int(len(link["item_id"])),
    }
    return RawDataset(
        name="ml-100k",
        users=users,
        items=items,
        ratings=inter["rating"],
        item_relations={"kg": (src, dst)},
        labels={
            "genre": RawLabels(
                side="item",
                entity=genres.index.to_numpy(dtype=np.int64),
                label=genre_codes,
                names=[str(g) for g in genre_vocab],
                multi=True,
            ),
            "occupation": RawLabels(
                side="user",
                entity=user["user_id"],
                label=occ_codes,
                names=[str(o) for o in occ_vocab],
                multi=False,
            ),
            "age": RawLabels(
                side="user", entity=user["user_id"], label=age_codes, names=list(AGE_BANDS), multi=False
            ),
        },
        raw_counts=raw_counts,
        extra={
            "kg_item_pairs": int(len(src) // 2),
            "kg_items": kg_items,
            "kg_relations": list(KG_RELATIONS),
            "kg_max_entity_films": MAX_ENTITY_FILMS,
            "timestamps": inter["timestamp"],
            "source_dir": str(folder),
        },
    )


def kg_item_pairs(
    head: np.ndarray, relation: np.ndarray, tail: np.ndarray, link_item: np.ndarray, link_entity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Item pairs sharing a tail entity through ``KG_RELATIONS``: ``(src, dst, items covered)``."""
    triples = pd.DataFrame({"head": head, "relation": relation, "tail": tail})
    triples = triples[triples["relation"].isin(KG_RELATIONS)]
    links = pd.DataFrame({"item": np.asarray(link_item, dtype=np.int64), "head": link_entity})
    merged = triples.merge(links, on="head", how="inner")
    src, dst = co_membership_pairs(
        merged["item"].to_numpy(dtype=np.int64), merged["tail"].to_numpy(dtype=str), MAX_ENTITY_FILMS
    )
    return src, dst, int(np.unique(src).size)
