"""Shared parsing helpers for the release loaders.

Fast path: ``pandas.read_csv`` with the expected dtypes. Failure path: the file is re-read as
strings (vectorized with pandas string methods) to find the first bad line, so every format
problem becomes a ``DataFormatError`` naming the file, the 1-based line number and what was
expected (field count, non-numeric id, ...). Missing release files become a
``MissingDataError`` naming the files, the directory looked in and where to get the release.

Two shapes every loader gets from ``read_table``:
- a two-column file may carry a third column holding one constant value on every line (the
  HIN releases (HERec: Yelp, Amazon) ship their pair files as ``a<TAB>b<TAB>1``); it is checked
  and dropped. A third column that varies, or a line with another field count, is an error.
- an id or integer beyond the int64 range is a ``DataFormatError`` naming file and line
  (pandas alone raises a bare ``OverflowError``).
A main interaction file read with ``allow_empty=False`` that is empty, blank or holds only its
header is reported as empty, so the user is not sent hunting for a k-core problem.
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

INT64_MAX_DIGITS = "9223372036854775807"  # 2**63 - 1
INT64_MIN_DIGITS = "9223372036854775808"  # -(2**63), without the sign

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
    allow_empty: bool = True,
) -> dict[str, np.ndarray]:
    """Read a delimited table with exactly ``len(columns)`` fields per line.

    ``sep=None`` splits on runs of whitespace. ``header=True`` skips the first line; with
    ``header_names`` that line must start with those field names (RecBole atomic files: the
    part before ``:`` is compared). Blank lines are skipped. Returns one array per column.

    A two-column table may have a third field on every line if it holds the same value on
    every line (the HIN releases' constant weight ``1``); it is checked and dropped.
    ``allow_empty=False`` (a release's main interaction file): an empty or blank file, or one
    with a header but no data line, is a ``DataFormatError`` saying the file is empty.
    """
    path = Path(path)
    n = len(columns)
    extra_ok = n == 2
    dtypes: dict[int, object] = {
        i: (np.int64 if c.kind in ("id", "int") else np.float64 if c.kind == "float" else str)
        for i, c in enumerate(columns)
    }
    if extra_ok:
        dtypes[n] = str  # the optional constant column, compared as text; ignored when absent
    if _is_blank(path):
        if not allow_empty:
            raise DataFormatError(path, f"the file is empty; expected {_expected_lines(columns, sep)}")
        return _empty_table(columns, dtypes)
    if header and header_names is not None:
        _check_header(path, sep, encoding, header_names)
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
        df = pd.DataFrame({i: pd.Series([], dtype=dtypes[i]) for i in range(n)})
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        if _diagnose(path, columns, sep, header, encoding):
            return _no_data(path, columns, sep, dtypes, allow_empty)
        raise DataFormatError(path, f"could not parse ({exc})") from exc
    width = df.shape[1]
    shape_ok = width == n or (extra_ok and width == n + 1 and _constant(df[n]))
    if not shape_ok or any(df[i].isna().any() for i in range(n)):
        if _diagnose(path, columns, sep, header, encoding):
            return _no_data(path, columns, sep, dtypes, allow_empty)
        raise DataFormatError(path, f"expected {n} {_SEP_WORDS.get(sep, repr(sep))} fields")
    if len(df) == 0:
        return _no_data(path, columns, sep, dtypes, allow_empty)
    return {c.name: df[i].to_numpy() for i, c in enumerate(columns)}


def _no_data(
    path: Path, columns: Sequence[Column], sep: str | None, dtypes: dict[int, object], allow_empty: bool
) -> dict[str, np.ndarray]:
    """A file with a header but no data line: an empty table, or an error if it must hold rows."""
    if allow_empty:
        return _empty_table(columns, dtypes)
    expected = _expected_lines(columns, sep)
    raise DataFormatError(path, f"the file is empty: a header but no data lines; expected {expected}")


def _is_blank(path: Path) -> bool:
    """True if the file holds nothing but whitespace (reads only up to the first other byte)."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            if chunk.strip():
                return False
    return True


def _empty_table(columns: Sequence[Column], dtypes: dict[int, object]) -> dict[str, np.ndarray]:
    return {c.name: pd.Series([], dtype=dtypes[i]).to_numpy() for i, c in enumerate(columns)}


def _expected_lines(columns: Sequence[Column], sep: str | None) -> str:
    names = ", ".join(c.name for c in columns)
    return f"lines of {len(columns)} {_SEP_WORDS.get(sep, repr(sep))} fields ({names})"


def _constant(values: pd.Series) -> bool:
    """Whether a column holds one value (compared as stripped text) and no missing field."""
    if values.isna().any():
        return False
    text = values.astype(str).str.strip()
    return bool((text == text.iloc[0]).all()) if len(text) else True


def _check_header(path: Path, sep: str | None, encoding: str, names: Sequence[str]) -> None:
    with open(path, encoding=encoding, newline="") as fh:
        first = fh.readline().rstrip("\r\n")
    fields = first.split(sep)
    got = [f.split(":", 1)[0] for f in fields]
    if got[: len(names)] != list(names):
        raise DataFormatError(path, f"expected a header starting with {list(names)}, got {fields}", line=1)


def _diagnose(path: Path, columns: Sequence[Column], sep: str | None, header: bool, encoding: str) -> bool:
    """Locate the first bad line (failure path only) and raise a ``DataFormatError`` for it.

    Returns True if the file has no data line at all (only a header and blank lines), False if
    no bad line was found otherwise.
    """
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
        return True
    fields = lines.str.split(sep, regex=False) if sep is not None else lines.str.split()
    counts = fields.str.len().to_numpy()
    n = len(columns)
    words = f"{_SEP_WORDS.get(sep, repr(sep))} fields"
    with_extra = n == 2 and int(counts[0]) == n + 1  # the optional constant third column
    expected = n + 1 if with_extra else n
    bad = np.flatnonzero(counts != expected)
    if bad.size:
        i = int(bad[0])
        if with_extra:
            what = f"expected {expected} {words} as on line {int(lineno[0])}, got {int(counts[i])}"
        else:
            what = f"expected {n} {words}, got {int(counts[i])}"
            if n == 2:
                what += " (a third field is accepted only on every line, holding one constant value)"
        raise DataFormatError(path, what, line=int(lineno[i]))
    if with_extra:
        extra = fields.str[n].str.strip()
        first = extra.iloc[0]
        differs = np.flatnonzero((extra != first).to_numpy())
        if differs.size:
            i = int(differs[0])
            raise DataFormatError(
                path,
                f"field 3 is {extra.iloc[i]!r} but {first!r} on line {int(lineno[0])}: a field after "
                f"the {n} expected ones ({', '.join(c.name for c in columns)}) is accepted only when "
                "it holds the same value on every line (the HIN releases' weight column 1)",
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
        what = "id" if col.kind == "id" else "integer" if col.kind == "int" else "value"
        if invalid.any():
            i = int(np.flatnonzero(invalid)[0])
            adjective = "non-numeric" if non_numeric[i] else "non-integer"
            raise DataFormatError(
                path, f"{adjective} {what} {table[j].iloc[i]!r} in column {col.name}", line=int(lineno[i])
            )
        if col.kind in ("id", "int"):
            over = np.flatnonzero(_beyond_int64(values))
            if over.size:
                i = int(over[0])
                raise DataFormatError(
                    path,
                    f"{what} {values.iloc[i]!r} in column {col.name} does not fit a 64-bit integer "
                    "(ids and integers must lie in -2**63 .. 2**63-1)",
                    line=int(lineno[i]),
                )
    return False


def _beyond_int64(values: pd.Series) -> np.ndarray:
    """Mask of decimal integer strings outside the int64 range (compared as digit strings)."""
    negative = values.str.startswith("-").to_numpy(dtype=bool)
    digits = values.str.lstrip("+-").str.lstrip("0").to_numpy(dtype=object)
    length = np.fromiter((len(d) for d in digits), dtype=np.int64, count=len(digits))
    limit = np.where(negative, INT64_MIN_DIGITS, INT64_MAX_DIGITS)
    at_limit = length == len(INT64_MAX_DIGITS)
    over = length > len(INT64_MAX_DIGITS)
    over[at_limit] = digits[at_limit].astype(str) > limit[at_limit]
    return over


def data_lines(path: Path, header: bool = False, encoding: str = "utf-8") -> tuple[np.ndarray, list[str]]:
    """The 1-based line numbers and texts of the rows ``read_table`` returned (blank lines and a
    header skipped), so that row ``i`` of a table can be named by its line. For the failure and
    notice paths: it reads the file again."""
    lines = Path(path).read_text(encoding=encoding).split("\n")
    start = 1 if header else 0
    keep = [(n + 1, ln.rstrip("\r")) for n, ln in enumerate(lines) if n >= start and ln.strip()]
    return np.array([n for n, _ in keep], dtype=np.int64), [ln for _, ln in keep]


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
    """Column ``j`` of a .mat matrix as int64 ids.

    NaN, fractional values and values outside the int64 range (which a cast would silently
    wrap) are errors naming the row.
    """
    col = arr[:, j]
    if np.issubdtype(col.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(col) | (col != np.round(col)))
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(path, f"row {i + 1}: non-integer id {col[i]!r} in column {name}")
        over = np.flatnonzero((col >= 2.0**63) | (col < -(2.0**63)))
    elif np.issubdtype(col.dtype, np.unsignedinteger):
        over = np.flatnonzero(col > np.iinfo(np.int64).max)
    else:
        over = np.zeros(0, dtype=np.int64)
    if over.size:
        i = int(over[0])
        raise DataFormatError(
            path, f"row {i + 1}: id {col[i]!r} in column {name} does not fit a 64-bit integer"
        )
    return col.astype(np.int64)
