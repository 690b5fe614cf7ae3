"""``datasets export NAME --format atomic --out DIR``: a registered dataset as RecBole atomic files.

The folder ``DIR`` gets ``<stem>.inter`` (``<stem>`` = ``DIR``'s name, as the ``atomic`` loader
expects) and the files holding the sources of the dataset's default tasks, plus ``pmtrec.yaml``
declaring those tasks, so that ``--set data.name=atomic --set data.path=DIR`` reads the same
dataset back (same processed ids, interactions, split, relations and labels) and RecBole can read
the files (it ignores ``pmtrec.yaml``). What is written, from the loader's raw dataset:

- ``.inter``: ``user_id:token item_id:token [rating:float] [timestamp:float]``, rows in file order
  (so de-duplication keeps the same first rows);
- ``.user`` / ``.item``: the id and one field per label set of that side: ``token`` when every
  entity has at most one label row, else ``token_seq`` with the rows as given (repeats kept, so a
  single-label set declared ``single_label: true`` reduces to the same most frequent label). Label
  values are the label names when they are tokens (no whitespace) that the loader orders as the
  label ids are ordered, else the label ids themselves, so ties (``top_k``, most frequent label)
  break the same way;
- ``.net``: the user relation's rows as given (one user relation per folder);
- ``.kg`` + ``.link``: each item relation as knowledge-graph triples ``(item entity, relation name,
  group entity)`` with ``.link`` mapping items to their entity: the groups the relation was
  derived from when the loader kept them (``RawDataset.memberships``: amazon's view nodes, with
  their cap), else one group per linked item pair (a relation given as pairs; made symmetric).

Label names that are not such tokens are lost (lastfm's tags, which hold spaces, are written as
their ids). ml-100k is already atomic: its five files are copied as shipped, with its
declarations. The folder
is written beside ``DIR`` under a temporary name and renamed into place: never half-written.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pmtrec_lab.config import AtomicFields
from pmtrec_lab.data.atomic_files import SIDECAR, folder_files
from pmtrec_lab.data.loading import load_raw
from pmtrec_lab.data.registry import DatasetSpec, TaskDefault, get_spec
from pmtrec_lab.data.sources.atomic import token_order
from pmtrec_lab.data.types import RawDataset, RawLabels
from pmtrec_lab.errors import ConfigError, PmtrecError

FORMATS = ("atomic",)


def export_dataset(
    name: str,
    out: str | Path,
    fmt: str = "atomic",
    data_dir_: str | Path | None = None,
    loader_args: dict[str, Any] | None = None,
) -> Path:
    """Write dataset ``name`` as atomic files into the new (or empty) folder ``out``; returns it.
    ``loader_args`` go to its loader (e.g. the synthetic generator's sizes)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    spec = get_spec(name)
    if spec.folder:
        raise ConfigError(
            f"dataset {name!r} is read from atomic files already (data.path); copy that folder instead"
        )
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PmtrecError(f"--out {out}: exists and is not an empty folder; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        raw = load_raw(name, data_dir_, **(loader_args or {}))
        if spec.atomic_tasks:
            sidecar = _copy_atomic(raw, spec, tmp, out.name)
        else:
            sidecar = _write_from_raw(raw, spec, tmp, out.name)
        header = (
            f"# pmtrec-lab datasets export {name}: task declarations for data.name=atomic "
            "(RecBole ignores this file)\n"
        )
        (tmp / SIDECAR).write_text(header + yaml.safe_dump(sidecar, sort_keys=False), encoding="utf-8")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sidecar(spec: DatasetSpec, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"fields": AtomicFields().model_dump(), "k_core": spec.k_core, "tasks": tasks}


def _enabled(spec: DatasetSpec) -> dict[str, bool]:
    return {t.source: t.enabled for t in spec.tasks}


def _copy_atomic(raw: RawDataset, spec: DatasetSpec, folder: Path, stem: str) -> dict[str, Any]:
    """A dataset stored as atomic files (ml-100k): its files as shipped, renamed to ``stem``."""
    source = Path(str(raw.extra["source_dir"]))
    for suffix, path in folder_files(source, spec.name).items():
        shutil.copyfile(path, folder / f"{stem}.{suffix}")
    enabled = _enabled(spec)
    tasks = [{**dict(t), "enabled": enabled.get(str(t["name"]), True)} for t in spec.atomic_tasks]
    return _sidecar(spec, tasks)


def _write_from_raw(raw: RawDataset, spec: DatasetSpec, folder: Path, stem: str) -> dict[str, Any]:
    inter: dict[str, np.ndarray] = {"user_id:token": raw.users, "item_id:token": raw.items}
    if raw.ratings is not None:
        inter["rating:float"] = raw.ratings
    timestamps = raw.extra.get("timestamps")
    if isinstance(timestamps, np.ndarray) and len(timestamps) == len(raw.users):
        inter["timestamp:float"] = timestamps
    _write_table(folder / f"{stem}.inter", inter)

    declared: list[dict[str, Any]] = []
    label_fields: dict[str, dict[str, pd.Series]] = {"user": {}, "item": {}}
    social = [t for t in spec.tasks if t.type == "social"]
    if len(social) > 1:
        raise PmtrecError(
            f"dataset {spec.name!r}: {len(social)} user relations ({[t.source for t in social]}), but an "
            "atomic folder has one .net file"
        )
    kg: list[pd.DataFrame] = []
    for t in spec.tasks:
        entry: dict[str, Any] = {"type": t.type, "name": t.source}
        if t.type in ("item_label", "user_label"):
            lab = raw.labels[t.source]
            column, kind = _label_column(lab)
            label_fields[lab.side][f"{t.source}:{kind}"] = column
            entry["field"] = t.source
            if kind == "token_seq" and not lab.multi:
                entry["single_label"] = True
            if lab.top_k is not None:
                entry["top_k"] = lab.top_k
        elif t.type == "social":
            src, dst = raw.user_relations[t.source]
            _write_table(folder / f"{stem}.net", {"source_id:token": src, "target_id:token": dst})
        else:
            triples, cap = _kg_triples(raw, t)
            kg.append(triples)
            entry.update(relations=[t.source], max_degree=cap)
        entry["enabled"] = t.enabled
        declared.append(entry)
    for side, columns in label_fields.items():
        if columns:
            _write_entities(folder / f"{stem}.{side}", f"{side}_id:token", columns)
    if kg:
        triples = pd.concat(kg, ignore_index=True)
        _write_table(
            folder / f"{stem}.kg",
            {
                "head_id:token": _entity(triples["item"].to_numpy()),
                "relation_id:token": triples["relation"].to_numpy(),
                "tail_id:token": triples["tail"].to_numpy(),
            },
        )
        linked = np.unique(triples["item"].to_numpy(dtype=np.int64))
        _write_table(folder / f"{stem}.link", {"item_id:token": linked, "entity_id:token": _entity(linked)})
    return _sidecar(spec, declared)


def _label_tokens(lab: RawLabels) -> np.ndarray:
    """The token written for each label id: its name when names are whitespace-free, distinct
    tokens that the loader orders as the ids, else the id."""
    names = np.array([str(n) for n in lab.names], dtype=object)
    usable = len(names) > 0 and len(set(names.tolist())) == len(names)
    if usable:
        text = pd.Series(names, dtype=object)
        usable = bool((text.str.len() > 0).all() and not text.str.contains(r'[\s"]', regex=True).any())
    if usable:
        ranks, _ = token_order(names)
        usable = bool(np.array_equal(ranks, np.arange(len(names))))
    return names if usable else np.arange(len(lab.names)).astype(str).astype(object)


def _label_column(lab: RawLabels) -> tuple[pd.Series, str]:
    """Per entity, its label tokens (space-joined, rows in order) and the field type."""
    tokens = _label_tokens(lab)[lab.label]
    per_entity = np.bincount(pd.factorize(lab.entity)[0]) if len(lab.entity) else np.zeros(0, dtype=np.int64)
    kind = "token_seq" if lab.multi or (per_entity.size and per_entity.max() > 1) else "token"
    column = pd.Series(tokens, dtype=object).groupby(lab.entity, sort=True).agg(" ".join)
    return column, kind


def _write_entities(path: Path, id_header: str, columns: dict[str, pd.Series]) -> None:
    ids = np.unique(np.concatenate([c.index.to_numpy(dtype=np.int64) for c in columns.values()]))
    table: dict[str, Any] = {id_header: ids}
    for header, column in columns.items():
        table[header] = column.reindex(ids).fillna("").to_numpy(dtype=object)
    _write_table(path, table)


def _kg_triples(raw: RawDataset, task: TaskDefault) -> tuple[pd.DataFrame, int | None]:
    """``(item, relation, tail entity)`` rows of an item relation and the degree cap to declare."""
    member = raw.memberships.get(task.source)
    if member is not None:
        items = np.asarray(member.entity, dtype=np.int64)
        groups = pd.Series(member.group).astype(str).to_numpy(dtype=object)
        cap = member.max_group_size
    else:  # pairs only: one group per unordered pair
        src, dst = (np.asarray(a, dtype=np.int64) for a in raw.item_relations[task.source])
        off = src != dst
        pairs = np.unique(np.stack([np.minimum(src, dst)[off], np.maximum(src, dst)[off]], axis=1), axis=0)
        items = pairs.T.ravel()
        groups = np.tile(np.arange(len(pairs)), 2).astype(str).astype(object)
        cap = None
    tails = np.char.add(f"{task.source}.", groups.astype(str)).astype(object)
    frame = pd.DataFrame({"item": items, "relation": task.source, "tail": tails})
    return frame, cap


def _entity(items: np.ndarray) -> np.ndarray:
    return np.char.add("item.", np.asarray(items, dtype=np.int64).astype(str)).astype(object)


def _write_table(path: Path, columns: dict[str, Sequence[Any] | np.ndarray]) -> None:
    """A tab-separated atomic file with the typed header ``columns``' keys."""
    frame = pd.DataFrame({i: np.asarray(v) for i, v in enumerate(columns.values())})
    frame.columns = list(columns)
    frame.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_NONE, lineterminator="\n", encoding="utf-8")
