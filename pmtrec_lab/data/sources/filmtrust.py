"""FilmTrust (Guo, Zhang and Yorke-Smith, "A novel Bayesian similarity measure for recommender
systems", IJCAI'13).

Space-separated ``ratings.txt`` (user, item, rating in 0.5..4; 3 duplicated (user, item) rows)
and ``trust.txt`` (truster, trustee, 1). The trust network covers 874 user ids, some of whom
never rate.

``trust.txt``'s value column: 1 is a trust link. A row holding 0 states the absence of trust
(copies of the release that list both kinds exist): it is dropped with a notice on the
``pmtrec_lab.data`` logger naming the file, the count and the first line, and counted as
``raw_counts["trust_value_0"]`` (absent when there is none, as in the release: 1,853 rows, all 1).
Any other value (2, -1, 0.5) is a ``DataFormatError`` naming the line: it is neither, and is not
guessed at. Before, every row was read as a link whatever its value.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pmtrec_lab.data.sources._io import Column, count_unique_pairs, data_lines, read_table, require_files
from pmtrec_lab.data.types import RawDataset
from pmtrec_lab.errors import DataFormatError

FILES = ("ratings.txt", "trust.txt")

log = logging.getLogger("pmtrec_lab.data")


def _trust_links(path: Path, table: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """(trusters, trustees, rows dropped) of ``trust.txt``: the rows holding 1; those holding 0
    dropped with a notice; any other value an error naming its line."""
    value = table["value"]
    zero, one = value == 0, value == 1
    other = np.flatnonzero(~(zero | one))
    if other.size:
        numbers, texts = data_lines(path)
        i = int(other[0])
        field = texts[i].split()[2] if len(texts[i].split()) > 2 else repr(float(value[i]))
        raise DataFormatError(
            path,
            f"trust value {field!r} in column value: expected 0 or 1 (1: a trust link; 0: none, dropped)",
            line=int(numbers[i]),
        )
    if not zero.any():  # the release: every row 1, the arrays as read
        return table["truster"], table["trustee"], 0
    dropped = int(zero.sum())
    numbers, _ = data_lines(path)
    log.warning(
        "%s: %d row(s) with value 0 (no trust) dropped, the first on line %d; the other %d row(s) "
        "are the trust links",
        path,
        dropped,
        int(numbers[int(np.flatnonzero(zero)[0])]),
        int(one.sum()),
    )
    return table["truster"][one], table["trustee"][one], dropped


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
    truster, trustee, dropped = _trust_links(root / "trust.txt", t)
    users, items = r["user"], r["item"]
    raw_counts: dict[str, int | str] = {
        "users": int(np.unique(users).size),
        "items": int(np.unique(items).size),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(users)),
        "trust": int(len(truster)),
        "trust_users": int(np.unique(np.concatenate([truster, trustee])).size),
    }
    if dropped:
        raw_counts["trust_value_0"] = dropped
    return RawDataset(
        name="filmtrust",
        users=users,
        items=items,
        ratings=r["rating"],
        user_relations={"trust": (truster, trustee)},
        raw_counts=raw_counts,
    )
