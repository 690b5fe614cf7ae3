"""Shared parsing helpers for the release loaders.

Fast path: ``pandas.read_csv`` with the expected dtypes. Failure path: the file is re-read as
strings (vectorized with pandas string methods) to find the first bad line, so every format
problem becomes a ``DataFormatError`` naming the file, the 1-based line number and what was
expected (field count, non-numeric id, ...). Missing release files become a
``MissingDataError`` naming the files, the directory looked in and where to get the release.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pmtrec_lab.errors import DataFormatError, MissingDataError

Kind = Literal["id", "int", "float", "str"]

_SEP_WORDS = {
    "\t": "tab-separated",
    ",": "comma-separated",
    " ": "space-separated",
    None: "whitespace-separated",
}


@dataclass(frozen=True)
class Column:
    """One expected column: its name (used in messages and as the result key) and kind.

    ``id`` and ``int`` columns are read as int64, ``float`` as float64, ``str`` as text.
    """

    name: str
    kind: Kind = "id"


def require_files(root: Path, files: Sequence[str], dataset: str) -> None:
    """Raise ``MissingDataError`` listing every missing release file of ``dataset`` under ``root``."""
    missing = [f for f in files if not (Path(root) / f).is_file()]
    if not missing:
        return
    try:
        from pmtrec_lab.data.registry import get_spec

        source = get_spec(dataset).source
    except ValueError:
        source = "the dataset's original release"
    raise MissingDataError(
        f"dataset {dataset!r}: missing release file(s) {', '.join(missing)} in {Path(root)}; "
        f"obtain the release from {source} and place the files in that directory "
        "(or point --data-dir / PMTREC_DATA_DIR at a directory holding <name>/<files>)"
    )


def read_table(
    path: Path,
    columns: Sequence[Column],
    sep: str | None = "\t",
    header: bool = False,
    encoding: str = "utf-8",
    header_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Read a delimited table with exactly ``len(columns)`` fields per line.

    ``sep=None`` splits on runs of whitespace. ``header=True`` skips the first line; with
    ``header_names`` that line must start with those field names (RecBole atomic files: the
    part before ``:`` is compared). Blank lines are skipped. Returns one array per column.
    """
    path = Path(path)
    if header and header_names is not None:
        _check_header(path, sep, encoding, header_names)
    dtypes: dict[int, object] = {
        i: (np.int64 if c.kind in ("id", "int") else np.float64 if c.kind == "float" else str)
        for i, c in enumerate(columns)
    }
    try:
        df = pd.read_csv(
            path,
            sep=r"\s+" if sep is None else sep,
            header=None,
            skiprows=1 if header else 0,
            dtype=dtypes,
            encoding=encoding,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_values={i: [""] for i, c in enumerate(columns) if c.kind != "str"},
            engine="c",
        )
    except pd.errors.EmptyDataError:
        df = pd.DataFrame({i: pd.Series([], dtype=dtypes[i]) for i in range(len(columns))})
    except (ValueError, TypeError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        _diagnose(path, columns, sep, header, encoding)
        raise DataFormatError(path, f"could not parse ({exc})") from exc
    if df.shape[1] != len(columns) or any(df[i].isna().any() for i in range(df.shape[1])):
        _diagnose(path, columns, sep, header, encoding)
        raise DataFormatError(path, f"expected {len(columns)} {_SEP_WORDS.get(sep, repr(sep))} fields")
    return {c.name: df[i].to_numpy() for i, c in enumerate(columns)}


def _check_header(path: Path, sep: str | None, encoding: str, names: Sequence[str]) -> None:
    with open(path, encoding=encoding, newline="") as fh:
        first = fh.readline().rstrip("\r\n")
    fields = first.split(sep)
    got = [f.split(":", 1)[0] for f in fields]
    if got[: len(names)] != list(names):
        raise DataFormatError(path, f"expected a header starting with {list(names)}, got {fields}", line=1)


def _diagnose(path: Path, columns: Sequence[Column], sep: str | None, header: bool, encoding: str) -> None:
    """Locate the first bad line (failure path only) and raise a ``DataFormatError`` for it."""
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataFormatError(path, f"not valid {encoding} text ({exc.reason})", line=line) from None
    lines = pd.Series(text.split("\n"), dtype=object).str.rstrip("\r")
    lineno = np.arange(1, len(lines) + 1)
    if header:
        lines, lineno = lines.iloc[1:], lineno[1:]
    keep = (lines.str.strip() != "").to_numpy()
    lines, lineno = lines[keep].reset_index(drop=True), lineno[keep]
    if len(lines) == 0:
        return
    fields = lines.str.split(sep, regex=False) if sep is not None else lines.str.split()
    counts = fields.str.len().to_numpy()
    n = len(columns)
    bad = np.flatnonzero(counts != n)
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            path,
            f"expected {n} {_SEP_WORDS.get(sep, repr(sep))} fields, got {int(counts[i])}",
            line=int(lineno[i]),
        )
    table = pd.DataFrame(fields.tolist())
    for j, col in enumerate(columns):
        if col.kind == "str":
            continue
        values = table[j].str.strip()
        non_numeric = pd.to_numeric(values, errors="coerce").isna().to_numpy()
        invalid = non_numeric.copy()
        if col.kind in ("id", "int"):
            invalid |= ~values.str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy(dtype=bool)
        if invalid.any():
            i = int(np.flatnonzero(invalid)[0])
            what = "id" if col.kind == "id" else "integer" if col.kind == "int" else "value"
            adjective = "non-numeric" if non_numeric[i] else "non-integer"
            raise DataFormatError(
                path, f"{adjective} {what} {table[j].iloc[i]!r} in column {col.name}", line=int(lineno[i])
            )


def to_zero_based(path: Path, ids: np.ndarray, column: str, header: bool = False) -> np.ndarray:
    """Convert 1-based ids to 0-based; an id below 1 is a ``DataFormatError`` naming its line."""
    bad = np.flatnonzero(ids < 1)
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            path,
            f"id {int(ids[i])} in column {column}: expected 1-based ids (>= 1)",
            line=i + 1 + int(header),
        )
    return ids.astype(np.int64) - 1


def encode_labels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map label values to contiguous 0-based ids in sorted value order: ``(codes, vocabulary)``."""
    vocab, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64).ravel(), vocab


def count_unique_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """Number of distinct (a, b) rows (hash-based: one int64 key per row when ids allow it)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if len(a) == 0:
        return 0
    lo_a, lo_b = int(a.min()), int(b.min())
    span_b = int(b.max()) - lo_b + 1
    if (int(a.max()) - lo_a + 1) * span_b < 2**62:
        return int(pd.unique((a - lo_a) * span_b + (b - lo_b)).size)
    return int(len(pd.MultiIndex.from_arrays([a, b]).unique()))


def count_unique(a: np.ndarray) -> int:
    """Number of distinct values (hash-based)."""
    return int(pd.unique(np.asarray(a)).size)


def co_membership_pairs(
    entity: np.ndarray, group: np.ndarray, max_group_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct entities sharing a group, both directions, sorted by (src, dst).

    Built as the nonzero pattern of ``M @ M.T`` for the binary entity x group incidence matrix
    ``M`` without its diagonal. Groups with more than ``max_group_size`` distinct entities are
    dropped first (hub entities would connect nearly every pair).
    """
    entity = np.asarray(entity, dtype=np.int64)
    if entity.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    ent_ids, ent = np.unique(entity, return_inverse=True)
    _, grp = np.unique(group, return_inverse=True)
    m = sp.csr_matrix(
        (np.ones(len(ent), dtype=np.float32), (ent.ravel(), grp.ravel())),
        shape=(len(ent_ids), int(grp.max()) + 1),
    )
    m.data[:] = 1.0  # duplicates were summed: binarize
    if max_group_size is not None:
        size = np.diff(m.tocsc().indptr)
        m = m[:, np.flatnonzero(size <= max_group_size)]
    co = (m @ m.T).tocoo()
    off = co.row != co.col
    src, dst = co.row[off].astype(np.int64), co.col[off].astype(np.int64)
    order = np.lexsort((dst, src))
    return ent_ids[src[order]], ent_ids[dst[order]]


def read_mat_matrix(path: Path) -> np.ndarray:
    """The single non-dunder variable of a MATLAB v5 ``.mat`` file, as a 2-D array."""
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except (NotImplementedError, ValueError, TypeError, OSError) as exc:
        raise DataFormatError(path, f"expected a MATLAB v5 .mat file ({exc})") from None
    names = [k for k in content if not k.startswith("__")]
    if len(names) != 1:
        raise DataFormatError(path, f"expected exactly one variable, found {names}")
    arr = np.asarray(content[names[0]])
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(
            path, f"variable {names[0]!r}: expected a 2-D numeric matrix, got {arr.dtype} {arr.shape}"
        )
    return arr


def mat_int_column(path: Path, arr: np.ndarray, j: int, name: str) -> np.ndarray:
    """Column ``j`` of a .mat matrix as int64 ids; NaN or fractional values are errors naming the row."""
    col = arr[:, j]
    if np.issubdtype(col.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(col) | (col != np.round(col)))
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(path, f"row {i + 1}: non-integer id {col[i]!r} in column {name}")
    return col.astype(np.int64)
