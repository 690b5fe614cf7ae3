"""The layout of a RecBole atomic-file folder: which files it holds, their typed headers, its
``pmtrec.yaml`` and the tasks its files offer.

A folder ``<stem>/`` (``<stem>`` = the folder's name) holds ``<stem>.inter`` and any of
``<stem>.user``, ``.item``, ``.net``, ``.kg``, ``.link`` (Zhao et al., "RecBole", CIKM'21; the
RecSysDatasets collection). Every file is tab-separated, UTF-8, with a header line of
``name:type`` fields, type one of ``token``, ``token_seq``, ``float``, ``float_seq``.

``pmtrec.yaml`` (optional, ignored by RecBole) holds what this project needs beyond the files:
``fields`` (field names, ``config.AtomicFields``), ``tasks`` (``data.sources.atomic.AtomicTask`` declarations)
and ``k_core``. ``datasets export`` writes it; ``data.fields`` / ``data.tasks`` override it.

This module reads headers and that file only (cheap, used when a configuration is checked); the
rows are read by ``pmtrec_lab.data.sources.atomic``. It imports nothing from ``pmtrec_lab.config``
(which calls it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pmtrec_lab.errors import ConfigError, DataFormatError, MissingDataError
from pmtrec_lab.yaml_files import read_yaml_file

SUFFIXES = ("inter", "user", "item", "net", "kg", "link")
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
SIDECAR = "pmtrec.yaml"
SIDECAR_KEYS = ("fields", "tasks", "k_core")

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def stem_of(folder: Path) -> str:
    return Path(folder).name


def folder_files(folder: Path, stem: str | None = None) -> dict[str, Path]:
    """``{suffix: path}`` of the atomic files present in ``folder``, in ``SUFFIXES`` order."""
    stem = stem or stem_of(folder)
    return {s: Path(folder) / f"{stem}.{s}" for s in SUFFIXES if (Path(folder) / f"{stem}.{s}").is_file()}


def require_inter(folder: Path, stem: str | None = None) -> None:
    """``MissingDataError`` naming the folder when it or its ``<stem>.inter`` does not exist."""
    folder = Path(folder)
    stem = stem or stem_of(folder)
    if not folder.is_dir():
        raise MissingDataError(
            f"atomic dataset folder {folder} does not exist (data.path; a relative path is taken under "
            "the data directory, --data-dir / PMTREC_DATA_DIR)"
        )
    if not (folder / f"{stem}.inter").is_file():
        present = sorted(p.name for p in folder.iterdir() if p.suffix.lstrip(".") in SUFFIXES)
        raise MissingDataError(
            f"atomic dataset folder {folder}: no {stem}.inter (the interaction file is named after the "
            f"folder); atomic files there: {present or 'none'}"
        )


def read_header(path: Path) -> list[tuple[str, str]]:
    """The ``(name, type)`` fields of an atomic file's header line.

    ``DataFormatError`` naming the file and line 1 for an empty file, a field without a type, an
    unknown type, an empty or repeated name.
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        try:
            first = fh.readline().rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise DataFormatError(path, f"not valid UTF-8 text ({exc.reason})", line=1) from None
    if not first.strip():
        raise DataFormatError(
            path, "the file is empty: expected a header line of tab-separated name:type fields", line=1
        )
    fields: list[tuple[str, str]] = []
    for raw in first.split("\t"):
        name, sep, kind = raw.partition(":")
        if not sep:
            raise DataFormatError(
                path,
                f"header field {raw!r} has no type: expected name:type with type one of "
                f"{', '.join(FIELD_TYPES)} (RecBole atomic files)",
                line=1,
            )
        if kind not in FIELD_TYPES:
            raise DataFormatError(
                path,
                f"header field {raw!r}: unknown type {kind!r}; expected one of {', '.join(FIELD_TYPES)}",
                line=1,
            )
        if not name or name in (f for f, _ in fields):
            what = "an empty name" if not name else f"the name {name!r} twice"
            raise DataFormatError(path, f"header has {what}; every field needs its own name", line=1)
        fields.append((name, kind))
    return fields


def read_sidecar(folder: Path) -> tuple[dict[str, Any], Path]:
    """The folder's ``pmtrec.yaml`` as a mapping (``{}`` when absent) and its path.

    ``ConfigError`` naming the file for invalid YAML, a top level that is not a mapping, or an
    unknown key."""
    path = Path(folder) / SIDECAR
    if not path.is_file():
        return {}, path
    loaded = read_yaml_file(path) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(SIDECAR_KEYS)}")
    unknown = [k for k in loaded if k not in SIDECAR_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected {', '.join(SIDECAR_KEYS)}")
    return loaded, path


def offered_tasks(folder: Path, user_field: str, item_field: str) -> list[dict[str, Any]]:
    """The tasks a folder's files offer when nothing declares its tasks, each off by default.

    Every ``token`` / ``token_seq`` field of ``.item`` and ``.user`` (a label task; a name taken
    twice gets its side as prefix), ``.net`` with ``source_id`` and ``target_id`` (social), and
    ``.kg`` with ``.link`` (item-item over every relation, entities linked to more than 50 items
    dropped). Float fields are not offered: they need ``bins``.
    """
    files = folder_files(folder)
    offered: list[dict[str, Any]] = []
    taken: set[str] = set()
    for side, id_field in (("item", item_field), ("user", user_field)):
        if side not in files:
            continue
        for name, kind in read_header(files[side]):
            if name == id_field or kind not in ("token", "token_seq"):
                continue
            label = _NAME_CHARS.sub("_", name).lstrip(".-") or "field"
            if label in taken or label in ("interacts", "interacted_by", "net", "kg"):
                label = f"{side}_{label}"
            taken.add(label)
            offered.append({"type": f"{side}_label", "name": label, "field": name, "enabled": False})
    if "net" in files and {"source_id", "target_id"} <= {n for n, _ in read_header(files["net"])}:
        offered.append({"type": "social", "name": "net", "enabled": False})
    if "kg" in files and "link" in files:
        kg = {n for n, _ in read_header(files["kg"])}
        link = {n for n, _ in read_header(files["link"])}
        if {"head_id", "relation_id", "tail_id"} <= kg and {item_field, "entity_id"} <= link:
            offered.append({"type": "item_item", "name": "kg", "enabled": False})
    return offered
