"""Any dataset in RecBole's atomic-file format (Zhao et al., "RecBole", CIKM'21), with its
auxiliary tasks declared in configuration (:class:`AtomicTask`, the schema of ``data.tasks``, in
``data.sources.atomic_tasks``) rather than written in code.

A folder ``<stem>/`` holds ``<stem>.inter`` and any of ``.user``, ``.item``, ``.net``, ``.kg``,
``.link`` (layout, headers and ``pmtrec.yaml``: ``pmtrec_lab.data.atomic_files``). Reading:

- every file is checked whole before use: the header's ``name:type`` fields, then the number of
  tab-separated fields of every line (counted on the bytes, vectorized); a bad line is a
  ``DataFormatError`` naming file and line. Fields are read as text (``pandas.read_csv``, no
  quoting, nothing turned into NaN) and converted where a task needs them.
- ids are tokens. Each side's tokens are those of the interaction file: when they are all
  integers they are ordered numerically ("10" after "2") and, when written canonically, used as
  the raw ids themselves (so ml-100k keeps its ids); other tokens get ids in their sort order and
  are kept in ``extra["user_tokens"]`` / ``extra["item_tokens"]`` (token of each raw id).
- rows of ``.user``, ``.item``, ``.net`` and ``.link`` whose id appears in no interaction are
  counted per file (``extra["unmatched"]``, distinct ids; shown by ``datasets info``) and dropped:
  preprocessing would drop them anyway. A file none of whose ids match is an error (its ids are
  in another id space, or the field names are wrong). A knowledge graph's entity degrees are
  counted before that, over every ``.link`` row, as the files give them.
- labels: ``token`` fields give one label per row, ``token_seq`` fields several (space-separated);
  label ids follow the same token order; ``bins`` turn numbers into bands (``searchsorted`` on
  the edges, right side: a value equal to an edge belongs to the band above it).

Raw counts: ``users``, ``items``, ``interactions``, ``rows`` (of the interaction file), one key
per task (a label set: its distinct labels; ``social``: the ``.net`` rows; ``item_item``: the
derived directed item pairs) and ``<suffix>_rows`` for each other file read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pmtrec_lab.config import AtomicFields, DataConfig
from pmtrec_lab.data.atomic_files import FIELD_TYPES, folder_files, read_header, require_inter
from pmtrec_lab.data.sources._io import _beyond_int64, co_membership_pairs, count_unique_pairs
from pmtrec_lab.data.sources.atomic_tasks import AtomicTask, check_atomic_tasks
from pmtrec_lab.data.types import RawDataset, RawLabels
from pmtrec_lab.errors import ConfigError, DataFormatError, MissingDataError

__all__ = ["AtomicTask", "check_atomic_tasks", "load_raw", "read_folder", "token_order"]

_WHITESPACE = np.array([9, 10, 11, 12, 13, 32], dtype=np.uint8)
_NAN_WORDS = ("", "nan")


# ------------------------------------------------------------------------------ one file


@dataclass
class AtomicTable:
    """One atomic file: its typed header, each field's text per row, each row's line number."""

    path: Path
    fields: list[tuple[str, str]]
    columns: dict[str, np.ndarray]  # field name -> object array of str, one entry per row
    lines: np.ndarray  # 1-based line number of each row

    def __len__(self) -> int:
        return int(len(self.lines))

    def header(self) -> str:
        return "\t".join(f"{n}:{k}" for n, k in self.fields)

    def field(self, name: str, role: str, kinds: Sequence[str] = FIELD_TYPES) -> tuple[np.ndarray, str]:
        """The text of field ``name`` and its type; ``DataFormatError`` if absent or of another type."""
        kind = dict(self.fields).get(name)
        if kind is None:
            raise DataFormatError(
                self.path, f"no field {name!r} ({role}); the header has {self.header()!r}", line=1
            )
        if kind not in kinds:
            raise DataFormatError(
                self.path, f"field {name}:{kind} ({role}): expected type {' or '.join(kinds)}", line=1
            )
        return self.columns[name], kind

    def numbers(self, text: np.ndarray, rows: np.ndarray, name: str) -> np.ndarray:
        """``text`` (values of field ``name`` on rows ``rows``) as float64, NaN where empty or
        ``nan``; a non-numeric value is a ``DataFormatError`` naming its line."""
        series = pd.Series(text, dtype=object)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        missing = series.str.strip().str.lower().isin(_NAN_WORDS).to_numpy(dtype=bool)
        bad = np.flatnonzero(np.isnan(values) & ~missing)
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                self.path, f"non-numeric value {text[i]!r} in field {name}", line=int(self.lines[rows[i]])
            )
        return values


def read_atomic_table(path: Path, require_rows: bool = False) -> AtomicTable:
    """Read one atomic file whole (see the module docstring for what is checked).

    ``require_rows``: a file with a header and no data line is an error saying it is empty (the
    interaction file: nothing to train on).
    """
    path = Path(path)
    fields = read_header(path)
    names = [n for n, _ in fields]
    data = path.read_bytes()
    starts, ends, blank = _scan_lines(data)
    counts = _fields_per_line(data, starts, ends)
    data_lines = np.flatnonzero(~blank)
    data_lines = data_lines[data_lines > 0]  # line 0 is the header
    bad = data_lines[counts[data_lines] != len(fields)]
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            path,
            f"expected {len(fields)} tab-separated fields ({', '.join(names)}) as in the header, "
            f"got {int(counts[i])}",
            line=i + 1,
        )
    if data_lines.size == 0:
        if require_rows:
            raise DataFormatError(
                path, f"the file is empty: a header but no data lines; expected lines of {', '.join(names)}"
            )
        empty = np.zeros(0, dtype=object)
        return AtomicTable(path, fields, {n: empty for n in names}, np.zeros(0, dtype=np.int64))
    skip = np.flatnonzero(blank).tolist() + [0]
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep="\t",
            header=None,
            names=list(range(len(fields))),
            skiprows=set(skip),
            skip_blank_lines=False,
            dtype=str,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8",
            engine="c",
        )
    except UnicodeDecodeError:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise DataFormatError(path, f"not valid UTF-8 text ({exc.reason})", line=line) from None
        raise
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataFormatError(path, f"could not parse ({exc})") from None
    if len(frame) != data_lines.size:  # e.g. a lone carriage return ending a line inside a row
        raise DataFormatError(
            path, f"read {len(frame)} rows from {data_lines.size} data lines (stray carriage returns?)"
        )
    columns = {n: frame[i].to_numpy(dtype=object) for i, n in enumerate(names)}
    return AtomicTable(path, fields, columns, (data_lines + 1).astype(np.int64))


def _scan_lines(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end byte offsets of every line (ends exclude the newline) and whether the line is
    blank (whitespace only), vectorized over the bytes."""
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    ends = newlines if (arr.size and arr[-1] == 10) else np.append(newlines, arr.size)
    starts = np.concatenate([[0], newlines + 1])[: ends.size]
    dtype = np.int32 if arr.size < 2**31 else np.int64
    solid = np.concatenate([[0], np.cumsum(~np.isin(arr, _WHITESPACE), dtype=dtype)])
    blank = (solid[ends] - solid[starts]) == 0
    return starts, ends, blank


def _fields_per_line(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    tabs = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 9)
    return np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts) + 1


# ------------------------------------------------------------------------------- tokens


def token_order(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The rank of each distinct token (integers numerically, ties and others by text) and, when
    every token is a canonically written int64 integer, their values (else None)."""
    tokens = np.asarray(tokens, dtype=object)
    n = len(tokens)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    text = np.asarray(tokens, dtype=str)
    series = pd.Series(tokens, dtype=object)
    integer = series.str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy(dtype=bool)
    by_text = np.argsort(text, kind="stable")
    if integer.all() and not _beyond_int64(series).any():
        values = series.astype(np.int64).to_numpy()
        text_rank = np.empty(n, dtype=np.int64)
        text_rank[by_text] = np.arange(n)
        order = np.lexsort((text_rank, values))
        canonical = bool((values.astype(str) == text).all())
    else:
        order, values, canonical = by_text, None, False
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    return ranks, (values if canonical else None)


def encode_tokens(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Label ids of token values in token order: ``(ids, names)``."""
    codes, uniq = pd.factorize(np.asarray(values, dtype=object))
    ranks, _ = token_order(uniq)
    names = np.empty(len(uniq), dtype=object)
    names[ranks] = uniq
    return ranks[codes].astype(np.int64), [str(x) for x in names]


@dataclass
class IdSpace:
    """The ids of one side (users or items): the distinct tokens of the interaction file's field."""

    index: pd.Index
    ids: np.ndarray  # raw id of each entry of ``index``
    coded: bool  # ids are ranks (the tokens are kept in extra), not the integers the tokens spell

    @classmethod
    def of(cls, tokens: np.ndarray) -> tuple[IdSpace, np.ndarray]:
        """The space of ``tokens`` and the raw id of each of them."""
        codes, uniq = pd.factorize(np.asarray(tokens, dtype=object))
        ranks, values = token_order(uniq)
        ids = ranks if values is None else values
        return cls(pd.Index(uniq, dtype=object), ids, values is None), ids[codes]

    def lookup(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ids of ``tokens`` and which of them are in the space (ids of the others: 0)."""
        pos = self.index.get_indexer(np.asarray(tokens, dtype=object))
        found = pos >= 0
        return np.where(found, self.ids[np.maximum(pos, 0)], 0).astype(np.int64), found

    def tokens_by_id(self) -> np.ndarray:
        out = np.empty(len(self.ids), dtype=object)
        out[self.ids] = self.index.to_numpy(dtype=object)
        return out


# ------------------------------------------------------------------------------ a folder


@dataclass
class AtomicRead:
    """What ``read_folder`` read: the raw dataset, the tables, and per task what it found
    (``stats[name]``: ``labels`` distinct labels, ``rows`` rows given, ``pairs`` / ``items`` of an
    item-item task over every ``.link`` item)."""

    raw: RawDataset
    tables: dict[str, AtomicTable]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Reader:
    """State of one ``read_folder`` call: files read once, id spaces, unmatched counts."""

    def __init__(self, folder: Path, stem: str, fields: AtomicFields):
        self.folder, self.stem, self.fields = folder, stem, fields
        self.files = folder_files(folder, stem)
        self.tables: dict[str, AtomicTable] = {}
        self.unmatched: dict[str, int] = {}
        self.spaces: dict[str, IdSpace] = {}
        self._entities: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def table(self, suffix: str, task: str) -> AtomicTable:
        if suffix not in self.tables:
            if suffix not in self.files:
                raise MissingDataError(
                    f"atomic dataset {self.folder}: task {task!r} reads {self.stem}.{suffix}, which is not "
                    f"there (files present: {', '.join(p.name for p in self.files.values())})"
                )
            self.tables[suffix] = read_atomic_table(self.files[suffix])
        return self.tables[suffix]

    def match(
        self, tab: AtomicTable, side: str, tokens: np.ndarray, field_name: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw ids of ``tokens`` (values of ``tab``'s ``field_name``), whether each is in the
        interactions; counts the distinct unmatched ids of the file, an error when none match."""
        ids, found = self.spaces[side].lookup(tokens)
        missing = int(pd.unique(np.asarray(tokens, dtype=object)[~found]).size)
        self.unmatched[tab.path.name] = max(self.unmatched.get(tab.path.name, 0), missing)
        if len(tokens) and not found.any():
            inter_field = self.fields.user if side == "user" else self.fields.item
            raise DataFormatError(
                tab.path,
                f"none of the {missing} distinct {field_name} values (e.g. {str(tokens[0])!r}) appear as "
                f"{inter_field} in {self.stem}.inter: the files must use the same {side} tokens "
                "(or a field name is wrong)",
            )
        return ids, found

    def entities(self, side: str, task: str) -> tuple[AtomicTable, np.ndarray, np.ndarray]:
        """``.user`` / ``.item``: the table, each row's raw id and whether it is in the interactions."""
        tab = self.table(side, task)
        if side not in self._entities:
            id_field = self.fields.user if side == "user" else self.fields.item
            tokens, _ = tab.field(id_field, f"the {side} id, fields.{side}", ("token",))
            self._entities[side] = self.match(tab, side, tokens, id_field)
        ids, found = self._entities[side]
        return tab, ids, found


def read_folder(
    folder: Path,
    fields: AtomicFields,
    tasks: Sequence[AtomicTask],
    stem: str | None = None,
    name: str | None = None,
) -> AtomicRead:
    """Read the atomic files of ``folder`` (named ``<stem>.*``, default the folder's name) with the
    declared ``tasks``; the dataset is called ``name`` (default ``stem``)."""
    folder = Path(folder)
    stem = stem or folder.name
    require_inter(folder, stem)
    reader = _Reader(folder, stem, fields)
    inter = read_atomic_table(reader.files["inter"], require_rows=True)
    reader.tables["inter"] = inter
    user_tokens, _ = inter.field(fields.user, "the user id, fields.user", ("token",))
    item_tokens, _ = inter.field(fields.item, "the item id, fields.item", ("token",))
    reader.spaces["user"], users = IdSpace.of(user_tokens)
    reader.spaces["item"], items = IdSpace.of(item_tokens)
    rows = np.arange(len(inter))
    extra: dict[str, Any] = {}
    ratings = None
    if _optional_field(inter, fields.rating, AtomicFields().rating, "fields.rating"):
        text, _ = inter.field(fields.rating, "the rating, fields.rating", ("float", "token"))
        ratings = inter.numbers(text, rows, fields.rating)
    if _optional_field(inter, fields.time, AtomicFields().time, "fields.time"):
        text, _ = inter.field(fields.time, "the time, fields.time", ("float", "token"))
        extra["timestamps"] = inter.numbers(text, rows, fields.time)

    raw = RawDataset(name=name or stem, users=users, items=items, ratings=ratings)
    raw.raw_counts = {
        "users": int(len(reader.spaces["user"].ids)),
        "items": int(len(reader.spaces["item"].ids)),
        "interactions": count_unique_pairs(users, items),
        "rows": int(len(inter)),
    }
    result = AtomicRead(raw=raw, tables=reader.tables)
    for task in tasks:
        source = task.source_name()
        if task.is_label:
            raw.labels[source], result.stats[source] = _read_labels(reader, task)
        elif task.type == "social":
            src, dst, result.stats[source] = _read_social(reader, task)
            raw.user_relations[source] = (src, dst)
        else:
            src, dst, result.stats[source] = _read_kg(reader, task)
            raw.item_relations[source] = (src, dst)
            extra[f"{source}_item_pairs"] = result.stats[source]["pairs"]
            extra[f"{source}_items"] = result.stats[source]["items"]
        raw.raw_counts[source] = int(result.stats[source]["count"])
    for suffix, tab in reader.tables.items():
        if suffix != "inter":
            raw.raw_counts[f"{suffix}_rows"] = int(len(tab))
    extra["unmatched"] = dict(reader.unmatched)
    extra["source_dir"] = str(folder)
    for side in ("user", "item"):
        if reader.spaces[side].coded:
            extra[f"{side}_tokens"] = reader.spaces[side].tokens_by_id()
    raw.extra = extra
    return result


def _optional_field(tab: AtomicTable, name: str, default: str, setting: str) -> bool:
    """Whether the rating / time field is read: present, or missing under its default name (no
    ratings then); missing under another name is an error (a typo would drop them silently)."""
    if name in dict(tab.fields):
        return True
    if name != default:
        raise DataFormatError(
            tab.path, f"no field {name!r} ({setting}); the header has {tab.header()!r}", line=1
        )
    return False


def _read_labels(reader: _Reader, task: AtomicTask) -> tuple[RawLabels, dict[str, Any]]:
    side = "item" if task.type == "item_label" else "user"
    tab, ids, found = reader.entities(side, task.task_name())
    assert task.field is not None
    text, kind = tab.field(task.field, f"task {task.task_name()}")
    if kind.startswith("float") and task.bins is None:
        raise ConfigError(
            f"task {task.task_name()}: field {task.field} of {tab.path.name} is {kind}; give bins (band "
            "edges) to cut it into labels"
        )
    if kind.endswith("_seq"):
        exploded = pd.Series(text, dtype=object).str.split().explode().dropna()
        rows, values = exploded.index.to_numpy(dtype=np.int64), exploded.to_numpy(dtype=object)
    else:
        rows = np.flatnonzero(pd.Series(text, dtype=object).str.strip().to_numpy(dtype=object) != "")
        values = text[rows]
    if task.bins is not None:
        numbers = tab.numbers(values, rows, task.field)
        keep = ~np.isnan(numbers)
        rows, numbers = rows[keep], numbers[keep]
        edges = np.asarray(task.bins, dtype=np.float64)
        labels = np.searchsorted(edges, numbers, side="right").astype(np.int64)
        names = list(task.bin_names or band_names(task.bins))
        stats: dict[str, Any] = {}
    else:
        labels, names = encode_tokens(values)
        stats = {}
    stats["count"] = int(np.unique(labels).size)
    stats["rows"] = int(len(labels))
    ok = found[rows]
    multi = kind.endswith("_seq") and not task.single_label
    lab = RawLabels(
        side=side, entity=ids[rows][ok], label=labels[ok], names=names, multi=multi, top_k=task.top_k
    )
    return lab, stats


def band_names(bins: Sequence[float]) -> list[str]:
    """Default names of the ``len(bins) + 1`` bands cut by ``bins``: ``<b0``, ``[b0,b1)``, ..., ``>=bn``."""
    edges = [f"{b:g}" for b in bins]
    return [f"<{edges[0]}", *(f"[{a},{b})" for a, b in zip(edges, edges[1:], strict=False)), f">={edges[-1]}"]


def _read_social(reader: _Reader, task: AtomicTask) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    tab = reader.table("net", task.task_name())
    role = f"task {task.task_name()}"
    src_tokens, _ = tab.field(task.source_id, f"{role}, source_id", ("token",))
    dst_tokens, _ = tab.field(task.target_id, f"{role}, target_id", ("token",))
    both = np.concatenate([src_tokens, dst_tokens])
    ids, found = reader.match(tab, "user", both, f"{task.source_id}/{task.target_id}")
    n = len(tab)
    keep = found[:n] & found[n:]
    src, dst = ids[:n][keep], ids[n:][keep]
    if task.symmetric:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    return src, dst, {"count": n, "rows": n}


def _read_kg(reader: _Reader, task: AtomicTask) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    name = task.task_name()
    kg = reader.table("kg", name)
    link = reader.table("link", name)
    head, _ = kg.field(task.head_id, f"task {name}, head_id", ("token",))
    relation, _ = kg.field(task.relation_id, f"task {name}, relation_id", ("token",))
    tail, _ = kg.field(task.tail_id, f"task {name}, tail_id", ("token",))
    link_items, _ = link.field(reader.fields.item, "the item id, fields.item", ("token",))
    link_entities, _ = link.field(task.entity_id, f"task {name}, entity_id", ("token",))
    use = np.ones(len(kg), dtype=bool)
    if task.relations is not None:
        use = pd.Series(relation, dtype=object).isin(task.relations).to_numpy(dtype=bool)
        if len(kg) and not use.any():  # a small graph may lack some relations, not every one
            present = pd.unique(relation)
            raise ConfigError(
                f"task {name}: none of the relations {task.relations} occurs in {kg.path} (it has "
                f"{len(present)} relations, e.g. {[str(r) for r in present[:5]]})"
            )
    reader.match(link, "item", link_items, reader.fields.item)  # counts (and checks) the link's ids
    triples = pd.DataFrame({"entity": head[use], "tail": tail[use]})
    links = pd.DataFrame({"row": np.arange(len(link)), "entity": link_entities})
    merged = triples.merge(links, on="entity", how="inner")
    row = merged["row"].to_numpy(dtype=np.int64)
    local_item, local_tokens = pd.factorize(link_items[row].astype(object))
    tails = merged["tail"].to_numpy(dtype=object)
    src_local, dst_local = co_membership_pairs(local_item, tails, task.max_degree)
    global_ids, global_found = reader.spaces["item"].lookup(local_tokens)
    keep = global_found[src_local] & global_found[dst_local]
    src, dst = global_ids[src_local[keep]], global_ids[dst_local[keep]]
    order = np.lexsort((dst, src))
    stats = {
        "count": int(len(src_local)),
        "rows": int(len(kg)),
        "pairs": int(len(src_local) // 2),
        "items": int(np.unique(src_local).size),
    }
    return src[order], dst[order], stats


# ------------------------------------------------------------------------------ entry point


def load_raw(
    root: Path,
    fields: Mapping[str, Any] | None = None,
    tasks: Sequence[Mapping[str, Any]] | None = None,
    stem: str | None = None,
    name: str | None = None,
) -> RawDataset:
    """Read the atomic folder ``root`` (the registry's ``atomic`` loader).

    ``fields`` / ``tasks``: ``config.AtomicFields`` / :class:`AtomicTask` values (mappings);
    None: the folder's ``pmtrec.yaml``, else RecBole's fields and the tasks the files offer (off).
    """
    root = Path(root)
    if fields is None or tasks is None:
        settings = DataConfig(name="atomic", path=str(root.resolve())).atomic_settings()
        resolved_fields = settings.fields if fields is None else AtomicFields.model_validate(dict(fields))
        declared = settings.tasks if tasks is None else [AtomicTask.model_validate(dict(t)) for t in tasks]
    else:
        resolved_fields = AtomicFields.model_validate(dict(fields))
        declared = [AtomicTask.model_validate(dict(t)) for t in tasks]
    return read_folder(root, resolved_fields, declared, stem=stem, name=name).raw
