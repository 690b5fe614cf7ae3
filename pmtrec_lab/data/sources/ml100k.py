"""MovieLens-100k (Harper and Konstan, "The MovieLens Datasets: History and Context", TiiS 2015)
in the RecBole atomic-file form (Zhao et al., "RecBole", CIKM'21) with its Freebase knowledge
graph (as prepared for KB4Rec, Zhao et al., Data Intelligence 2019).

The release ships inside the ``recbole==1.2.1`` wheel on PyPI under
``recbole/dataset_example/ml-100k/``. When the five files are not under ``root``,
``ensure_ml100k`` downloads that wheel with ``pip download --no-deps`` (nothing is installed),
checks its sha256 and extracts only those files into the cache, atomically.

Labels: genre (item, multi; ``class:token_seq``), occupation (user, single) and age band (user,
single; <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ as in the ML-1M bands). Item relation
``kg``: distinct items sharing a tail entity through ``KG_RELATIONS`` (head entities mapped to
items through ``.link``), entities linked to more than ``MAX_ENTITY_FILMS`` films dropped.
Genre, language, country, content-rating and award relations link nearly every pair and are
left out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
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
from pmtrec_lab.errors import DataFormatError, MissingDataError
from pmtrec_lab.paths import cache_dir

FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item", "ml-100k.kg", "ml-100k.link")
RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
WHEEL_MEMBER_DIR = "recbole/dataset_example/ml-100k/"

# Exact .kg relation names used for the item-item task; the head entity is the film.
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


def _pip_download_command(dest: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        RECBOLE_REQUIREMENT,
        "-d",
        str(dest),
    ]


def _manual_hint(target: Path) -> str:
    return (
        f"to supply the files manually, download {WHEEL_NAME} from https://pypi.org/project/recbole/1.2.1/"
        f"#files, check its sha256 is {WHEEL_SHA256}, and extract {WHEEL_MEMBER_DIR}"
        f"{{{','.join(f.split('.', 1)[1] for f in FILES)}}} into {target} (or into <data-dir>/ml-100k/)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES)


def ensure_ml100k(target: Path | None = None) -> Path:
    """Return a directory holding the five ml-100k files, fetching them into ``target`` if absent.

    Default ``target``: ``cache_dir()/datasets/ml-100k``. The wheel is downloaded to a temporary
    directory, its sha256 checked, the five files extracted into a temporary directory beside
    ``target`` and that directory renamed into place: ``target`` is never half-written.
    """
    target = Path(target) if target is not None else cache_dir() / "datasets" / "ml-100k"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ml-100k-download-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        wheel_dir = tmp_path / "wheel"
        command = _pip_download_command(wheel_dir)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MissingDataError(
                f"ml-100k: could not run {' '.join(command)} ({exc}); {_manual_hint(target)}"
            ) from None
        wheels = sorted(wheel_dir.glob("recbole-*.whl")) if wheel_dir.is_dir() else []
        if proc.returncode != 0 or not wheels:
            tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
            raise MissingDataError(
                f"ml-100k: tried `{' '.join(command)}` to fetch the release from PyPI; it failed "
                f"(exit {proc.returncode}: {tail or 'no wheel downloaded'}); {_manual_hint(target)}"
            )
        digest = _sha256(wheels[0])
        if digest != WHEEL_SHA256:
            raise MissingDataError(
                f"ml-100k: downloaded {wheels[0].name} has sha256 {digest}, expected {WHEEL_SHA256}; "
                f"refusing to use it; {_manual_hint(target)}"
            )
        staging = tmp_path / "ml-100k"
        staging.mkdir()
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for name in FILES:
                    with zf.open(WHEEL_MEMBER_DIR + name) as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise MissingDataError(
                f"ml-100k: {wheels[0].name} lacks the release ({exc}); {_manual_hint(target)}"
            ) from None
        if target.exists() and not _complete(target):
            # An incomplete folder (from an older, interrupted layout): move it aside, then replace.
            stale = tmp_path / "stale"
            os.replace(target, stale)
        try:
            os.replace(staging, target)
        except OSError:
            if not _complete(target):  # another process may have won the race
                raise
    return target


def _read_atomic(
    path: Path, columns: list[Column], header: list[str], allow_empty: bool = True
) -> dict[str, np.ndarray]:
    return read_table(path, columns, sep="\t", header=True, header_names=header, allow_empty=allow_empty)


def load_raw(root: Path | None = None) -> RawDataset:
    """Read ml-100k from ``root`` if it holds the five files, else from the cache (fetched if needed)."""
    folder = Path(root) if root is not None and _complete(Path(root)) else ensure_ml100k()
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
