"""``load_dataset``: registry lookup, release-file check, preprocessing, split, and a cache.

Preprocessed datasets are cached under ``PMTREC_CACHE_DIR/preprocessed/`` keyed by the content
of the source files, the preprocessing parameters and ``PREPROCESS_VERSION``: a second load is
fast, and a changed file or parameter rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pmtrec_lab.config import DataConfig
from pmtrec_lab.data.preprocess import preprocess
from pmtrec_lab.data.registry import DatasetSpec, get_spec
from pmtrec_lab.data.split import split_per_user
from pmtrec_lab.data.types import RawDataset, RecDataset
from pmtrec_lab.errors import MissingDataError
from pmtrec_lab.paths import atomic_path, cache_dir, data_dir

#: bump when preprocessing output changes for the same inputs
PREPROCESS_VERSION = 1


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
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_raw(name: str, data_dir_: str | Path | None = None, **loader_args: Any) -> RawDataset:
    """Read a release as given (no filtering), e.g. for raw counts."""
    spec = get_spec(name)
    root = data_dir(data_dir_) / spec.name
    check_release_files(spec, root)
    args = {**spec.loader_args, **loader_args}
    fn = spec.load_function()
    return fn(None if spec.generated else root, **args)


def load_dataset(
    name: str,
    data_dir_: str | Path | None = None,
    *,
    k_core: int | None = None,
    rating_threshold: float | None = None,
    split_seed: int = 0,
    use_cache: bool = True,
    loader_args: dict[str, Any] | None = None,
) -> RecDataset:
    """Load, preprocess and split a registered dataset (cached).

    ``k_core`` and ``rating_threshold`` default to the dataset's registry values.
    ``loader_args`` go to the loader (e.g. the synthetic generator's sizes).
    """
    spec = get_spec(name)
    k = spec.k_core if k_core is None else int(k_core)
    if k < 1:
        raise ValueError(f"k_core must be >= 1, got {k}")
    threshold = spec.rating_threshold if rating_threshold is None else rating_threshold
    root = data_dir(data_dir_) / spec.name
    check_release_files(spec, root)
    args = {**spec.loader_args, **(loader_args or {})}
    params = {
        "k_core": k,
        "rating_threshold": threshold,
        "split_seed": split_seed,
        "loader_args": args,
        "version": PREPROCESS_VERSION,
    }
    cache_file: Path | None = None
    if use_cache:
        sources = [root / f for f in spec.files if (root / f).is_file()]
        key_src = json.dumps({"name": spec.name, "params": params}, sort_keys=True, default=str)
        key = hashlib.sha256((key_src + _file_digest(sources)).encode()).hexdigest()[:20]
        cache_file = cache_dir() / "preprocessed" / f"{spec.name}-{key}.pkl"
        if cache_file.is_file():
            try:
                with cache_file.open("rb") as f:
                    return pickle.load(f)
            except (pickle.UnpicklingError, EOFError, AttributeError):
                cache_file.unlink(missing_ok=True)  # stale or damaged: rebuild
    try:
        raw = spec.load_function()(None if spec.generated else root, **args)
    except TypeError as exc:
        raise ValueError(f"dataset {spec.name!r}: bad data.loader_args {sorted(args)}: {exc}") from None
    ds = build_rec_dataset(raw, k=k, rating_threshold=threshold, split_seed=split_seed)
    ds.params = params
    if cache_file is not None:
        with atomic_path(cache_file) as tmp, tmp.open("wb") as f:
            pickle.dump(ds, f, protocol=pickle.HIGHEST_PROTOCOL)
    return ds


def dataset_for_config(data: DataConfig) -> RecDataset:
    """The preprocessed dataset a run configuration's ``data`` section names (cached)."""
    return load_dataset(
        data.name,
        data.data_dir,
        k_core=data.k_core,
        rating_threshold=data.rating_threshold,
        split_seed=data.split_seed,
        loader_args=data.loader_args,
    )


def build_rec_dataset(raw: RawDataset, k: int, rating_threshold: float | None, split_seed: int) -> RecDataset:
    pairs, users, items, relations, labels = preprocess(raw, k, rating_threshold)
    split = split_per_user(pairs, len(users), split_seed)
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
        extra=dict(raw.extra),
    )


def dataset_info(ds: RecDataset) -> dict[str, Any]:
    """The ``datasets info --json`` object: raw counts, processed counts, split sizes."""
    train_counts = np.bincount(ds.split.train[:, 0], minlength=ds.num_users)
    return {
        "name": ds.name,
        "raw": ds.raw_counts,
        "processed": {
            **ds.processed_counts(),
            "density": len(ds.interactions) / max(1, ds.num_users * ds.num_items),
            "min_train_per_user": int(train_counts.min()) if ds.num_users else 0,
            "params": {k: v for k, v in ds.params.items() if k != "version"},
        },
        "split": ds.split.sizes(),
        "extra": {k: v for k, v in ds.extra.items() if isinstance(v, int | float | str)},
    }
