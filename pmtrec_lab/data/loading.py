"""``load_dataset``: registry lookup, release-file check, preprocessing, split, and a cache.

Preprocessed datasets are cached under ``PMTREC_CACHE_DIR/preprocessed/`` keyed by the content
of the source files, the preprocessing parameters, ``PREPROCESS_VERSION`` and the cache format
(``pmtrec_lab.data.cache.CACHE_FORMAT``): a second load is fast, and a changed file or parameter
rebuilds. Entries hold no pickle and carry checksums (see ``pmtrec_lab.data.cache``); a damaged
entry is rebuilt with a warning on the ``pmtrec_lab.data`` logger. The key is also the dataset's
``fingerprint``, set whether the dataset came from the cache or was built.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from pmtrec_lab.config import DataConfig
from pmtrec_lab.data.atomic_files import folder_files
from pmtrec_lab.data.aux_holdout import EXTRA_KEY as AUX_EXTRA_KEY
from pmtrec_lab.data.aux_holdout import aux_holdout_of, check_fraction, hold_out_aux
from pmtrec_lab.data.cache import (
    CACHE_FORMAT,
    CacheEntryError,
    NotStorableError,
    read_entry,
    remove_entry,
    write_entry,
)
from pmtrec_lab.data.preprocess import preprocess
from pmtrec_lab.data.registry import DATASETS, DatasetSpec, TaskDefault, get_spec
from pmtrec_lab.data.sources.atomic_tasks import AtomicTask
from pmtrec_lab.data.split import MIN_INTERACTIONS_FOR_SPLIT, hold_out_meta, split_per_user
from pmtrec_lab.data.types import RawDataset, RecDataset
from pmtrec_lab.errors import ConfigError, MissingDataError, PmtrecError, format_validation_errors
from pmtrec_lab.paths import cache_dir, data_dir

#: bump when preprocessing output changes for the same inputs
PREPROCESS_VERSION = 1

log = logging.getLogger("pmtrec_lab.data")


def check_release_files(spec: DatasetSpec, root: Path) -> None:
    """Raise MissingDataError naming missing files, where they were looked for and the source."""
    if spec.generated or spec.embedded:
        return
    missing = [f for f in spec.files if not (root / f).is_file()]
    if missing:
        raise MissingDataError(
            f"dataset {spec.name!r}: missing {', '.join(missing)} in {root} "
            f"(looked in <data-dir>/{spec.name}/; set --data-dir or PMTREC_DATA_DIR). "
            f"Obtain the release from: {spec.source}"
        )


def _file_digest(paths: list[Path]) -> str:
    """sha256 over the names and contents of ``paths`` (sorted): what the data is, not where."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class _Source:
    """Where a dataset is read from and what enters its cache key besides the files."""

    spec: DatasetSpec
    root: Path
    args: dict[str, Any]  # the loader's keyword arguments
    key_params: dict[str, Any]  # besides k_core, threshold, split seed, loader_args and version
    k_core: int  # the dataset's default k-core
    sources: list[Path]


def _resolve(
    name: str,
    data_dir_: str | Path | None,
    loader_args: dict[str, Any] | None,
    path: str | Path | None = None,
    fields: Any = None,
    tasks: Any = None,
) -> _Source:
    """The release folder, loader arguments and key parameters of a dataset.

    A folder dataset (``atomic``) is read from ``path`` with the fields and tasks its
    configuration, its ``pmtrec.yaml`` or its files give (``DataConfig.atomic_settings``); both
    enter the cache key, as do ml-100k's declarations."""
    spec = get_spec(name)
    user_args = dict(loader_args or {})
    if spec.folder:
        try:
            data = DataConfig(
                name=name,
                data_dir=None if data_dir_ is None else str(data_dir_),
                path=None if path is None else str(path),
                fields=fields,
                tasks=tasks,
            )
        except ValidationError as err:
            raise ConfigError(f"dataset {name!r}: {format_validation_errors(err)}") from None
        settings = data.atomic_settings()
        atomic = {
            "fields": settings.fields.model_dump(mode="json"),
            "tasks": [t.model_dump(mode="json") for t in settings.tasks],
        }
        root = settings.folder.resolve()
        files = folder_files(root)
        return _Source(
            spec=spec,
            root=root,
            args={**spec.loader_args, **atomic, **user_args},
            key_params={"atomic": atomic},
            k_core=settings.k_core or spec.k_core,
            sources=list(files.values()),
        )
    if path is not None or fields is not None or tasks is not None:
        raise ConfigError(f"data.path, data.fields and data.tasks are for data.name=atomic, not {name!r}")
    root = data_dir(data_dir_) / spec.name
    check_release_files(spec, root)
    key_params: dict[str, Any] = {}
    if spec.atomic_tasks:
        key_params["atomic"] = {"tasks": [dict(t) for t in spec.atomic_tasks]}
    return _Source(
        spec=spec,
        root=root,
        args={**spec.loader_args, **user_args},
        key_params=key_params,
        k_core=spec.k_core,
        sources=[root / f for f in spec.files if (root / f).is_file()],
    )


def load_raw(
    name: str,
    data_dir_: str | Path | None = None,
    *,
    path: str | Path | None = None,
    fields: Any = None,
    tasks: Any = None,
    **loader_args: Any,
) -> RawDataset:
    """Read a release as given (no filtering), e.g. for raw counts. ``path``, ``fields`` and
    ``tasks``: a folder dataset's (``atomic``) ``data.path``, ``data.fields`` and ``data.tasks``."""
    src = _resolve(name, data_dir_, loader_args, path, fields, tasks)
    return src.spec.load_function()(None if src.spec.generated else src.root, **src.args)


def load_dataset(
    name: str,
    data_dir_: str | Path | None = None,
    *,
    k_core: int | None = None,
    rating_threshold: float | None = None,
    split_seed: int = 0,
    use_cache: bool = True,
    loader_args: dict[str, Any] | None = None,
    path: str | Path | None = None,
    fields: Any = None,
    tasks: Any = None,
    meta_split: bool = False,
    aux_holdout: float | None = None,
) -> RecDataset:
    """Load, preprocess and split a registered dataset (cached).

    ``k_core`` and ``rating_threshold`` default to the dataset's registry values (a folder
    dataset's k-core: its ``pmtrec.yaml``'s, else the registry's). ``loader_args`` go to the
    loader (e.g. the synthetic generator's sizes). ``path``, ``fields``, ``tasks``: a folder
    dataset's (``atomic``) ``data.path``, ``data.fields`` and ``data.tasks`` (``config``
    models or mappings). The result's ``fingerprint`` is the cache key (also with
    ``use_cache=False``): the files' contents and every setting that changes the result, a
    folder dataset's fields and task declarations included. A damaged cache entry is rebuilt
    with a warning; a cache path that is not a usable directory is a ``PmtrecError``.
    ``meta_split``: hold out PMTRec v3's meta pairs (``split.hold_out_meta``); it enters the key
    only when on, so every dataset without it keeps its fingerprint. ``aux_holdout``: the share
    of each auxiliary relation and label set held out for auxiliary-task metrics
    (``aux_holdout.hold_out_aux``); likewise in the key only when on (> 0).
    """
    aux_holdout = check_fraction(aux_holdout)
    ident = _identity(
        name,
        data_dir_,
        k_core,
        rating_threshold,
        split_seed,
        loader_args,
        path,
        fields,
        tasks,
        meta_split,
        aux_holdout,
    )
    src, spec, params, key = ident.src, ident.src.spec, ident.params, ident.cache_key
    k, threshold, args, root = ident.k_core, ident.threshold, src.args, src.root
    entry: Path | None = None
    if use_cache:
        entry = preprocessed_dir() / f"{spec.name}-{key}"
        if entry.exists() or entry.is_symlink():
            try:
                cached = read_entry(entry, key)
                cached.fingerprint = ident.fingerprint  # the entry records its key; a run records the data's
                return cached
            except CacheEntryError as exc:
                log.warning("cache entry %s: %s; rebuilding it", exc.path, exc.reason)
                remove_entry(entry)
    try:
        raw = spec.load_function()(None if spec.generated else root, **args)
    except TypeError as exc:
        raise ValueError(f"dataset {spec.name!r}: bad data.loader_args {sorted(args)}: {exc}") from None
    ds = build_rec_dataset(
        raw,
        k=k,
        rating_threshold=threshold,
        split_seed=split_seed,
        meta_split=meta_split,
        aux_holdout=aux_holdout,
    )
    ds.params = params
    ds.fingerprint = key  # what the cache entry records and checks on reading
    if entry is not None:
        try:
            write_entry(entry, ds, key)
        except NotStorableError as exc:
            log.warning("dataset %r not cached: the cache cannot store %s", spec.name, exc)
        except OSError as exc:
            log.warning("dataset %r not cached: could not write %s (%s)", spec.name, entry, exc)
    ds.fingerprint = ident.fingerprint
    return ds


@dataclass(frozen=True)
class DataIdentity:
    """What a data configuration reads and how: its source, the settings that change the result,
    the cache key (those, the files' contents, ``PREPROCESS_VERSION`` and the cache format) and
    the data fingerprint (the files' contents and the settings only: a new cache format or
    preprocessing version is not new data). ``legacy`` holds the fingerprints runs recorded
    before the two were separated (they recorded the cache key of the formats of the time)."""

    src: _Source
    params: dict[str, Any]
    k_core: int
    threshold: Any
    cache_key: str
    fingerprint: str
    legacy: tuple[str, ...]

    def matches(self, recorded: str | None) -> bool:
        """Whether a run that recorded ``recorded`` trained on this data (unknown: assumed so)."""
        return not recorded or recorded == self.fingerprint or recorded in self.legacy


#: (cache format, preprocessing version) of the cache keys that runs recorded as their data
#: fingerprint before it was separated from the cache key (every committed run up to the v3 grid)
LEGACY_KEY_FORMATS: tuple[tuple[int, int], ...] = ((2, 1),)


def _identity(
    name: str,
    data_dir_: str | Path | None,
    k_core: int | None,
    rating_threshold: float | None,
    split_seed: int,
    loader_args: dict[str, Any] | None,
    path: str | Path | None,
    fields: Any,
    tasks: Any,
    meta_split: bool,
    aux_holdout: float | None = None,
) -> DataIdentity:
    src = _resolve(name, data_dir_, loader_args, path, fields, tasks)
    spec = src.spec
    k = src.k_core if k_core is None else int(k_core)
    if k < 1:
        raise ValueError(f"k_core must be >= 1, got {k}")
    threshold = spec.rating_threshold if rating_threshold is None else rating_threshold
    settings = {
        "k_core": k,
        "rating_threshold": threshold,
        "split_seed": split_seed,
        "loader_args": {k_: v for k_, v in src.args.items() if k_ not in src.key_params.get("atomic", {})},
        **src.key_params,
    }
    if meta_split:  # enters only when on, so every dataset without it keeps its fingerprint
        settings["meta_split"] = True
    if aux_holdout:  # the same: only when on
        settings["aux_holdout"] = float(aux_holdout)
    params = {**settings, "version": PREPROCESS_VERSION}  # the cache key's (sorted when hashed)
    digest = _file_digest(src.sources)
    fingerprint = hashlib.sha256(
        (json.dumps({"name": spec.name, "settings": settings}, sort_keys=True, default=str) + digest).encode()
    ).hexdigest()[:20]
    legacy = tuple(
        dataset_key(spec.name, {**params, "version": version}, src.sources, cache_format=fmt, digest=digest)
        for fmt, version in LEGACY_KEY_FORMATS
    )
    return DataIdentity(
        src=src,
        params=params,
        k_core=k,
        threshold=threshold,
        cache_key=dataset_key(spec.name, params, src.sources, digest=digest),
        fingerprint=fingerprint,
        legacy=legacy,
    )


def identity_for_config(data: DataConfig) -> DataIdentity:
    """The identity of a run configuration's data, from its files, without preprocessing them."""
    return _identity(
        data.name,
        data.data_dir,
        data.k_core,
        data.rating_threshold,
        data.split_seed,
        data.loader_args,
        data.path,
        data.fields,
        data.tasks,
        data.meta_split,
        check_fraction(data.aux_holdout),
    )


def dataset_key(
    name: str,
    params: dict[str, Any],
    sources: list[Path],
    cache_format: int = CACHE_FORMAT,
    digest: str | None = None,
) -> str:
    """The cache key: a hash of the source files' contents (``digest``, computed when not given),
    ``params`` and the cache format (not of paths or modification times)."""
    key_src = json.dumps(
        {"name": name, "params": params, "cache_format": cache_format}, sort_keys=True, default=str
    )
    return hashlib.sha256((key_src + (digest or _file_digest(sources))).encode()).hexdigest()[:20]


def preprocessed_dir() -> Path:
    """``cache_dir()/preprocessed``, created; a ``PmtrecError`` naming the path if it cannot be."""
    try:
        path = cache_dir() / "preprocessed"
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else "the cache directory"
        why = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError | NotADirectoryError):
            why += " (a regular file is in the way)"
        raise PmtrecError(
            f"cache directory {where} cannot be used for preprocessed datasets: {why}. Point "
            "PMTREC_CACHE_DIR at a writable directory (or move that file aside), or load with "
            "use_cache=False"
        ) from None
    return path


def dataset_for_config(data: DataConfig) -> RecDataset:
    """The preprocessed dataset a run configuration's ``data`` section names (cached)."""
    return load_dataset(
        data.name,
        data.data_dir,
        k_core=data.k_core,
        rating_threshold=data.rating_threshold,
        split_seed=data.split_seed,
        loader_args=data.loader_args,
        path=data.path,
        fields=data.fields,
        tasks=data.tasks,
        meta_split=data.meta_split,
        aux_holdout=data.aux_holdout,
    )


def build_rec_dataset(
    raw: RawDataset,
    k: int,
    rating_threshold: float | None,
    split_seed: int,
    meta_split: bool = False,
    aux_holdout: float | None = None,
) -> RecDataset:
    """Preprocess and split ``raw`` (with the meta split held out of training if ``meta_split``,
    and a share ``aux_holdout`` of each auxiliary relation and label set if that is > 0).

    A ``PmtrecError`` if no user keeps enough interactions to be split: the validation and
    test sets would be empty and every metric undefined, so training would be wasted.
    """
    pairs, users, items, relations, labels = preprocess(raw, k, rating_threshold)
    split = split_per_user(pairs, len(users), split_seed)
    if len(split.test) == 0:
        raise PmtrecError(
            f"dataset {raw.name!r}: no user has at least {MIN_INTERACTIONS_FOR_SPLIT} interactions after "
            f"preprocessing (k_core={k}, rating_threshold={rating_threshold}; {len(users)} users, "
            f"{len(pairs)} interactions kept), so the validation and test splits would be empty and "
            f"nothing could be evaluated. Raise k_core to at least {MIN_INTERACTIONS_FOR_SPLIT} (keeps "
            "only users with enough interactions), lower or drop rating_threshold, or use more data"
        )
    if meta_split:
        split = hold_out_meta(split, len(users))
    extra = dict(raw.extra)
    if check_fraction(aux_holdout) > 0:
        relations, labels, held = hold_out_aux(relations, labels, float(aux_holdout or 0), split_seed)
        extra[AUX_EXTRA_KEY] = held.to_extra()
    return RecDataset(
        name=raw.name,
        num_users=len(users),
        num_items=len(items),
        interactions=pairs,
        relations=relations,
        labels=labels,
        split=split,
        raw_counts=dict(raw.raw_counts),
        user_ids=users,
        item_ids=items,
        extra=extra,
    )


def default_tasks_of(ds: RecDataset) -> tuple[TaskDefault, ...]:
    """The default tasks a dataset was built with: its task declarations when it was read from
    atomic files (``params["atomic"]``), else its registry entry's (none for an unknown name)."""
    atomic = ds.params.get("atomic")
    if isinstance(atomic, dict) and "tasks" in atomic:
        declared = [AtomicTask.model_validate(t) for t in atomic["tasks"]]
        return tuple(TaskDefault(t.type, t.source_name(), t.enabled) for t in declared)
    return DATASETS[ds.name].tasks if ds.name in DATASETS else ()


def task_table(ds: RecDataset, tasks: Sequence[TaskDefault]) -> list[dict[str, Any]]:
    """One row per default task: ``name``, ``type``, ``source`` (its relation or label set),
    ``loss`` (``bpr`` for links, ``bce`` for multi-label sets, ``softmax`` for single-label ones;
    ``none`` when the set is empty after preprocessing) and ``rows`` (processed rows it trains on)."""
    out: list[dict[str, Any]] = []
    for t in tasks:
        if t.type in ("social", "item_item"):
            rel = ds.relations.get(t.source)
            loss, rows = "bpr", len(rel) if rel is not None else 0
        else:
            lab = ds.labels.get(t.source)
            loss = "none" if lab is None else "bce" if lab.multi else "softmax"
            rows = len(lab) if lab is not None else 0
        out.append({"name": t.name, "type": t.type, "source": t.source, "loss": loss, "rows": int(rows)})
    return out


def dataset_info(ds: RecDataset, tasks: Sequence[TaskDefault] | None = None) -> dict[str, Any]:
    """The ``datasets info --json`` object: raw counts, processed counts, split sizes, the default
    tasks (``task_table``; ``tasks`` default to the registered dataset's), for atomic files
    ``unmatched`` (per file, the distinct ids that appear in no interaction), and with
    ``data.aux_holdout`` the held-out rows per relation or label set and split (``aux_holdout``)."""
    if tasks is None:
        tasks = default_tasks_of(ds)
    train_counts = np.bincount(ds.split.train[:, 0], minlength=ds.num_users)
    info: dict[str, Any] = {
        "name": ds.name,
        "raw": ds.raw_counts,
        "processed": {
            **ds.processed_counts(),
            "density": len(ds.interactions) / max(1, ds.num_users * ds.num_items),
            "min_train_per_user": int(train_counts.min()) if ds.num_users else 0,
            "params": {k: v for k, v in ds.params.items() if k != "version"},
        },
        "split": ds.split.sizes(),
        "tasks": task_table(ds, tasks),
        "extra": {k: v for k, v in ds.extra.items() if isinstance(v, int | float | str)},
    }
    unmatched = ds.extra.get("unmatched")
    if isinstance(unmatched, dict):
        info["unmatched"] = dict(unmatched)
    held = aux_holdout_of(ds)
    if held is not None:  # only with data.aux_holdout, so the object reads as before without it
        info["aux_holdout"] = held.sizes()
    return info
