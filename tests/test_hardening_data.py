"""Hardening of the data layer (issue "Hardening", data items 5, 8, 10 and 14).

- The preprocessed-dataset cache stores nothing that can run code when read, notices damage
  (checksums), rebuilds a damaged entry with a warning naming the file, returns a dataset equal
  to a fresh build, and says what to do when the cache path is a regular file.
- ``RecDataset.fingerprint`` names the data a run trained on: it follows the source files'
  contents and the preprocessing parameters, and nothing else.
- The Yelp HIN release loads as published (a constant third column in every pair file), while a
  third column that varies or a wrong field count still names the file and line.
- Data that cannot give a usable dataset (empty interaction file, an id beyond int64, nothing
  to split) fails with an error naming the file or the parameter to change.

Small releases are generated here in each loader's published format, so the real loaders and
the real preprocessing run on them; the real FilmTrust release is used where it is present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from pmtrec_lab.data import load_dataset, loading
from pmtrec_lab.data.sources import amazon, ciao, filmtrust, lastfm, yelp
from pmtrec_lab.data.sources._io import Column, read_table
from pmtrec_lab.data.types import LabelSet, RecDataset, Relation, Split
from pmtrec_lab.errors import DataFormatError, PmtrecError

PRE = "preprocessed"
SMALL_SYNTHETIC = {"num_users": 80, "num_items": 50, "interactions_per_user": 10}
LOG = "pmtrec_lab.data"


# ---------------------------------------------------------------------------------- helpers


def assert_same(a: Any, b: Any, where: str = "dataset") -> None:
    """Deep equality with types and dtypes: what a cache round trip must preserve exactly."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        nan_ok = a.dtype.kind in "fc"
        assert np.array_equal(a, b, equal_nan=nan_ok), f"{where}: values differ"
    elif isinstance(a, float | np.floating) and np.isnan(a):
        assert np.isnan(b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(cache: Path) -> Path:
    """The single cache entry under ``cache/preprocessed`` (temporary names start with a dot)."""
    entries = [p for p in (cache / PRE).iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def _payload(entry: Path) -> Path:
    """The array payload of an entry (the entry itself when it is a single file)."""
    return entry / "arrays.npz" if entry.is_dir() else entry


def _reseal(entry: Path) -> None:
    """Recompute the manifest's checksums, as an attacker who can write the cache could."""
    manifest_path = entry / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name in manifest["files"]:
        manifest["files"][name] = _sha256(entry / name)
    manifest_path.write_text(json.dumps(manifest))


def _text(exc: DataFormatError) -> str:
    """The message without the file's path (a temporary path can contain any word)."""
    return str(exc).replace(str(exc.path), "<file>")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno >= logging.WARNING]


def _no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any build fail: what loads afterwards must come from the cache."""

    def boom(*args: object, **kwargs: object) -> RecDataset:
        raise AssertionError("dataset was rebuilt instead of read from the cache")

    monkeypatch.setattr(loading, "build_rec_dataset", boom)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(path))
    return path


# ------------------------------------------------------------- small releases, as published


def _lines(rows: list[tuple[object, ...]], sep: str) -> str:
    return "".join(sep.join(str(v) for v in row) + "\n" for row in rows)


def _pairs(rng: np.random.Generator, users: int, items: int, per_user: int) -> list[tuple[int, int]]:
    return [(u, int(i)) for u in range(users) for i in np.sort(rng.choice(items, per_user, replace=False))]


def write_filmtrust(root: Path, users: int = 30, items: int = 12, per_user: int = 6, seed: int = 0) -> Path:
    """``ratings.txt`` (user item rating) and ``trust.txt`` (truster trustee 1), 1-based ids."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ratings = [(u + 1, i + 1, float(rng.integers(1, 9)) / 2) for u, i in _pairs(rng, users, items, per_user)]
    trust = [(int(a) + 1, int(b) + 1, 1) for a, b in rng.integers(users, size=(2 * users, 2)) if a != b]
    (root / "ratings.txt").write_text(_lines(ratings, " "))
    (root / "trust.txt").write_text(_lines(trust, " "))
    return root


def write_amazon(root: Path, users: int = 12, items: int = 8, per_user: int = 6, seed: int = 0) -> Path:
    """``user_item.dat`` (tab: user item rating timestamp) and comma pair files, 0-based ids."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ui = [
        (u, i, int(rng.integers(1, 6)), 1000 + k)
        for k, (u, i) in enumerate(_pairs(rng, users, items, per_user))
    ]
    (root / "user_item.dat").write_text(_lines(ui, "\t"))
    (root / "item_view.dat").write_text(_lines([(i, i % 3) for i in range(items)], ","))
    (root / "item_category.dat").write_text(_lines([(i, i % 4) for i in range(items)], ","))
    (root / "item_brand.dat").write_text(_lines([(i, i % 2) for i in range(items)], ","))
    return root


def write_yelp(root: Path, users: int = 12, items: int = 8, per_user: int = 6, seed: int = 0) -> Path:
    """The HERec Yelp release as published: tab-separated, three columns in every file, 1-based."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ub = [
        (u + 1, i + 1, 1 + (u + i) % 5) for u, i in _pairs(rng, users, items, per_user)
    ]  # rating 5: <= 2 per user
    (root / "user_business.dat").write_text(_lines(ub, "\t"))
    (root / "user_user.dat").write_text(_lines([(u + 1, (u + 1) % users + 1, 1) for u in range(users)], "\t"))
    (root / "business_category.dat").write_text(
        _lines([(i + 1, c, 1) for i in range(items) for c in (1 + i % 3, 4)], "\t")
    )
    (root / "business_city.dat").write_text(_lines([(i + 1, 1 + i % 2, 1) for i in range(items)], "\t"))
    (root / "user_compliment.dat").write_text(_lines([(u + 1, 1 + u % 5, 1) for u in range(users)], "\t"))
    return root


def write_lastfm(root: Path, users: int = 12, items: int = 8, per_user: int = 6, seed: int = 0) -> Path:
    """hetrec2011-lastfm-2k: tab-separated with header lines; ``tags.dat`` in Latin-1."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ua = [(u + 2, i + 51, int(rng.integers(1, 500))) for u, i in _pairs(rng, users, items, per_user)]
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\n" + _lines(ua, "\t"))
    uf = [(u + 2, (u + 1) % users + 2) for u in range(users)]
    (root / "user_friends.dat").write_text("userID\tfriendID\n" + _lines(uf, "\t"))
    uta = [(u + 2, i + 51, 1 + (u + i) % 3, 1, 5, 2009) for u in range(3) for i in range(items)]
    (root / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n" + _lines(uta, "\t")
    )
    (root / "tags.dat").write_bytes("tagID\ttagValue\n1\tm\xe9tal\n2\trock\n3\tjazz\n".encode("latin-1"))
    return root


def write_ml100k(root: Path, users: int = 10, items: int = 8, seed: int = 0) -> Path:
    """ml-100k in the RecBole atomic-file form (every user rates every item: survives 5-core)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    inter = [
        (u + 1, i + 1, int(rng.integers(1, 6)), 880000000 + 7 * u + i)
        for u in range(users)
        for i in range(items)
    ]
    (root / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + _lines(inter, "\t")
    )
    occupations = ["student", "other", "writer"]
    user = [(u + 1, 15 + 5 * u, "MF"[u % 2], occupations[u % 3], f"{u:05d}") for u in range(users)]
    (root / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + _lines(user, "\t")
    )
    genres = ["Action Comedy", "Drama", "Action", "unknown"]
    item = [(i + 1, f"Film {i}", 1990 + i, genres[i % 4]) for i in range(items)]
    (root / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + _lines(item, "\t")
    )
    (root / "ml-100k.link").write_text(
        "item_id:token\tentity_id:token\n" + _lines([(i + 1, f"m.f{i}") for i in range(items)], "\t")
    )
    kg = [(f"m.f{i}", "film.film.actor", f"m.a{i % 3}") for i in range(items)]
    kg += [(f"m.f{i}", "film.film.genre", "m.g") for i in range(items)]
    (root / "ml-100k.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\n" + _lines(kg, "\t"))
    return root


def write_ciao(root: Path, users: int = 12, items: int = 8, per_user: int = 6, seed: int = 0) -> Path:
    """``rating.mat`` (user, item, category, rating, helpfulness) and ``trustnetwork.mat``, MATLAB v5."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        (u + 1, i + 1, 1 + i % 3, int(rng.integers(1, 6)), 1) for u, i in _pairs(rng, users, items, per_user)
    ]
    scipy.io.savemat(root / "rating.mat", {"rating": np.array(rows, dtype=np.float64)})
    trust = np.array([(u + 1, (u + 1) % users + 1) for u in range(users)], dtype=np.float64)
    scipy.io.savemat(root / "trustnetwork.mat", {"trustnetwork": trust})
    return root


WRITERS: dict[str, Callable[..., Path]] = {
    "filmtrust": write_filmtrust,
    "amazon": write_amazon,
    "yelp": write_yelp,
    "lastfm": write_lastfm,
    "ml-100k": write_ml100k,
    "ciao": write_ciao,
}


def _release(tmp_path: Path, name: str, **kwargs: Any) -> tuple[Path, Path]:
    """Write a small ``name`` release under ``tmp_path/data/name``: ``(data_dir, root)``."""
    data = tmp_path / "data"
    return data, WRITERS[name](data / name, **kwargs)


# ===================================================================== A. the dataset cache

ROUND_TRIP = ["filmtrust (real)", "ml-100k", "synthetic", "yelp", "lastfm"]


def _case(case: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., RecDataset]:
    """A loader of one of the round-trip datasets (keyword arguments go to ``load_dataset``)."""
    if case == "filmtrust (real)":
        shared = request.getfixturevalue("shared_datasets")
        return lambda **kw: load_dataset("filmtrust", shared, **kw)
    if case == "synthetic":
        return lambda **kw: load_dataset("synthetic", loader_args=SMALL_SYNTHETIC, **kw)
    data, _ = _release(tmp_path, case)
    return lambda **kw: load_dataset(case, data, **kw)


def _holds_no_pickle(path: Path) -> bool:
    """A cache file must be JSON or an ``.npz`` whose every member loads with ``allow_pickle=False``."""
    data = path.read_bytes()
    if data[:1] == b"\x80":  # pickle protocol >= 2
        return False
    try:
        json.loads(data.decode("utf-8"))
        return True
    except (UnicodeDecodeError, ValueError):
        pass
    try:
        with np.load(path, allow_pickle=False) as z:
            for member in z.files:
                z[member]
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("case", ROUND_TRIP)
def test_cache_round_trip_equals_a_fresh_build(
    case: str, cache: Path, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = _case(case, tmp_path, request)
    fresh = load(use_cache=False)
    built = load()
    _no_build(monkeypatch)
    cached = load()
    assert_same(fresh, built)
    assert_same(fresh, cached)
    assert len(cached.fingerprint) >= 16 and cached.fingerprint == fresh.fingerprint
    files = [p for p in (cache / PRE).rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix == ".pkl"]
    assert all(_holds_no_pickle(p) for p in files), files


@pytest.mark.parametrize(
    "user_ids, item_ids",
    [
        (np.array(["u1", "u2", "u3"], dtype=object), np.array(["i1", "ï2"], dtype=object)),
        (np.array(["alice", "bob", "c"]), np.array(["x", "yy"])),
        (np.array([10, 20, 30], dtype=np.int64), np.array([-1.5, 2.0])),
        (np.array(["", "a", "b"], dtype=object), np.array([7, 8], dtype=np.uint32)),
    ],
    ids=["object-str", "unicode", "int-float", "object-empty-str+uint32"],
)
def test_cache_entry_keeps_id_dtypes_and_structured_extra(
    user_ids: np.ndarray, item_ids: np.ndarray, tmp_path: Path
) -> None:
    """Raw ids may be strings (object arrays): they come back with the same dtype and values."""
    from pmtrec_lab.data import cache as ds_cache

    pairs = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]], dtype=np.int64)
    ds = RecDataset(
        name="toy",
        num_users=3,
        num_items=2,
        interactions=pairs,
        relations={"trust": Relation("trust", "user", np.array([0, 1]), np.array([1, 2]))},
        labels={"c": LabelSet("c", "item", np.array([0, 1]), np.array([1, 0]), 2, False, ["a", "b"])},
        split=Split(pairs[:4], pairs[4:5], pairs[5:], train_only_users=0, split_seed=3),
        raw_counts={"users": 3, "note": "x"},
        user_ids=user_ids,
        item_ids=item_ids,
        params={"k_core": 2, "rating_threshold": None, "loader_args": {"a": [1, 2.5, "s"]}},
        extra={
            "arr": np.arange(4, dtype=np.int16).reshape(2, 2),
            "scalar": np.float32(0.25),
            "tuple": (1, "two"),
            "nested": {"$array": [1], 3: {"inf": float("inf")}},
            "nan": float("nan"),
            "none": None,
        },
        fingerprint="abc123",
    )
    entry = tmp_path / "toy-abc123"
    ds_cache.write_entry(entry, ds, "abc123")
    assert all(_holds_no_pickle(p) for p in entry.iterdir())
    assert_same(ds, ds_cache.read_entry(entry, "abc123"))


def _flip_bytes(entry: Path) -> Path:
    path = _payload(entry)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))
    return path


def _truncate(entry: Path) -> Path:
    path = _payload(entry)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _garbage_meta(entry: Path) -> Path:
    (entry / "meta.json").write_text("{ this is not JSON")
    return entry / "meta.json"


def _edited_meta(entry: Path) -> Path:
    """Valid JSON with one value changed: only the checksum can notice."""
    path = entry / "meta.json"
    path.write_bytes(path.read_bytes().replace(b'"num_users": ', b'"num_users": 1', 1))
    return path


def _garbage_manifest(entry: Path) -> Path:
    (entry / "manifest.json").write_bytes(b"\x00\x01garbage")
    return entry / "manifest.json"


def _wrong_format(entry: Path) -> Path:
    path = entry / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format"] = 999
    path.write_text(json.dumps(manifest))
    return path


def _missing_payload(entry: Path) -> Path:
    (entry / "arrays.npz").unlink()
    return entry / "arrays.npz"


DAMAGE: dict[str, Callable[[Path], Path]] = {
    "flipped bytes in the arrays": _flip_bytes,
    "truncated arrays": _truncate,
    "garbage meta.json": _garbage_meta,
    "edited meta.json": _edited_meta,
    "garbage manifest": _garbage_manifest,
    "wrong format version": _wrong_format,
    "missing arrays": _missing_payload,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_rebuilt_with_a_warning(
    damage: str, cache: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = load_dataset("synthetic", loader_args=SMALL_SYNTHETIC, use_cache=False)
    load_dataset("synthetic", loader_args=SMALL_SYNTHETIC)
    bad = DAMAGE[damage](_entry(cache))
    with caplog.at_level(logging.WARNING, logger=LOG):
        got = load_dataset("synthetic", loader_args=SMALL_SYNTHETIC)
    assert_same(fresh, got)
    messages = _warnings(caplog)
    assert len(messages) == 1 and str(bad) in messages[0], messages
    caplog.clear()
    _no_build(monkeypatch)  # the rebuilt entry was written back and is sound
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert_same(fresh, load_dataset("synthetic", loader_args=SMALL_SYNTHETIC))
    assert _warnings(caplog) == []


class _Planted:
    """Unpickling this object calls ``open(marker, "w")``: the marker file proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _old_pickle_name(cache: Path) -> Path:
    """Where the pickle-based cache of PREPROCESS_VERSION 1 put this dataset (its exact key rule)."""
    params = {
        "k_core": 2,
        "rating_threshold": None,
        "split_seed": 0,
        "loader_args": SMALL_SYNTHETIC,
        "version": 1,
    }
    key_src = json.dumps({"name": "synthetic", "params": params}, sort_keys=True, default=str)
    key = hashlib.sha256((key_src + hashlib.sha256().hexdigest()).encode()).hexdigest()[:20]
    return cache / PRE / f"synthetic-{key}.pkl"


def _plant_old_pkl(cache: Path, fingerprint: str, blob: bytes) -> None:
    path = _old_pickle_name(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)


def _plant_at_entry(cache: Path, fingerprint: str, blob: bytes) -> None:
    (cache / PRE).mkdir(parents=True, exist_ok=True)
    (cache / PRE / f"synthetic-{fingerprint}").write_bytes(blob)


def _plant_in_entry(member: str) -> Callable[[Path, str, bytes], None]:
    def plant(cache: Path, fingerprint: str, blob: bytes) -> None:
        load_dataset("synthetic", loader_args=SMALL_SYNTHETIC)
        entry = _entry(cache)
        (entry / member).write_bytes(blob)
        if member != "manifest.json":
            _reseal(entry)

    return plant


PLANTS: dict[str, Callable[[Path, str, bytes], None]] = {
    "old .pkl name": _plant_old_pkl,
    "the entry path": _plant_at_entry,
    "arrays.npz (resealed)": _plant_in_entry("arrays.npz"),
    "meta.json (resealed)": _plant_in_entry("meta.json"),
    "manifest.json": _plant_in_entry("manifest.json"),
}


@pytest.mark.parametrize("where", list(PLANTS))
def test_planted_pickle_is_never_executed(
    where: str, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "code-ran"
    blob = pickle.dumps(_Planted(marker))
    fresh = load_dataset("synthetic", loader_args=SMALL_SYNTHETIC, use_cache=False)
    from pmtrec_lab.config import DataConfig
    from pmtrec_lab.data.loading import identity_for_config

    # load_dataset's own default: no auxiliary holdout (a run's DataConfig holds one out by default)
    plain = DataConfig(name="synthetic", loader_args=SMALL_SYNTHETIC, aux_holdout=None)
    key = identity_for_config(plain).cache_key
    PLANTS[where](cache, key, blob)
    with caplog.at_level(logging.WARNING, logger=LOG):
        got = load_dataset("synthetic", loader_args=SMALL_SYNTHETIC)
    assert not marker.exists(), "the planted pickle was executed"
    assert_same(fresh, got)
    if where == "old .pkl name":
        assert _warnings(caplog) == []  # old entries are not even looked at
    else:
        assert len(_warnings(caplog)) == 1


def test_object_array_in_payload_is_refused(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A resealed ``.npz`` with a pickled (object) member: numpy must not be allowed to unpickle it."""
    fresh = load_dataset("synthetic", loader_args=SMALL_SYNTHETIC, use_cache=False)
    load_dataset("synthetic", loader_args=SMALL_SYNTHETIC)
    entry = _entry(cache)
    with np.load(entry / "arrays.npz", allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    members[sorted(members)[0]] = np.array([{"x": 1}, None], dtype=object)
    np.savez(entry / "arrays.npz", **members)
    _reseal(entry)
    with caplog.at_level(logging.WARNING, logger=LOG):
        got = load_dataset("synthetic", loader_args=SMALL_SYNTHETIC)
    assert_same(fresh, got)
    assert len(_warnings(caplog)) == 1 and "arrays.npz" in _warnings(caplog)[0]


@pytest.mark.parametrize(
    "layout", ["cache dir is a file", "cache dir below a file", "preprocessed/ is a file"]
)
def test_cache_path_that_is_a_file_is_a_clear_error(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    if layout == "cache dir is a file":
        env = blocker
    elif layout == "cache dir below a file":
        env = blocker / "cache"
    else:
        env = tmp_path / "cache"
        env.mkdir()
        blocker = env / PRE
        blocker.write_text("a regular file")
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(env))
    with pytest.raises(PmtrecError) as info:
        load_dataset("synthetic", loader_args=SMALL_SYNTHETIC)
    msg = str(info.value)
    assert str(blocker) in msg and "PMTREC_CACHE_DIR" in msg and "use_cache=False" in msg, msg
    assert blocker.read_text() == "a regular file"  # nothing removed or overwritten
    assert load_dataset("synthetic", loader_args=SMALL_SYNTHETIC, use_cache=False).num_users == 80


# ------------------------------------------------------------------------- A. fingerprint


def _append(file: str, line: str) -> Callable[[Path, dict[str, Any]], None]:
    def change(root: Path, kwargs: dict[str, Any]) -> None:
        with open(root / file, "a") as fh:
            fh.write(line)

    return change


def _param(**changed: Any) -> Callable[[Path, dict[str, Any]], None]:
    return lambda root, kwargs: kwargs.update(changed)


FINGERPRINT_CHANGES: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "ratings.txt content": _append("ratings.txt", "1 12 4\n"),
    "trust.txt content": _append("trust.txt", "3 4 1\n"),
    "k_core": _param(k_core=3),
    "rating_threshold": _param(rating_threshold=2.0),
    "split_seed": _param(split_seed=1),
}


@pytest.mark.parametrize("change", list(FINGERPRINT_CHANGES))
def test_fingerprint_follows_data_and_parameters(change: str, cache: Path, tmp_path: Path) -> None:
    data, root = _release(tmp_path, "filmtrust")
    before = load_dataset("filmtrust", data)
    kwargs: dict[str, Any] = {}
    FINGERPRINT_CHANGES[change](root, kwargs)
    after = load_dataset("filmtrust", data, **kwargs)
    assert after.fingerprint and after.fingerprint != before.fingerprint
    assert_same(load_dataset("filmtrust", data, use_cache=False, **kwargs), after)  # not a stale entry


def _copied_dir(tmp_path: Path, data: Path) -> dict[str, Any]:
    other = tmp_path / "elsewhere"
    shutil.copytree(data, other)
    return {"data_dir_": other}


def _touched(tmp_path: Path, data: Path) -> dict[str, Any]:
    for f in (data / "filmtrust").iterdir():
        os.utime(f, (1_000_000, 1_000_000))
    return {}


FINGERPRINT_STABLE: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "cache hit": lambda tmp_path, data: {},
    "use_cache=False": lambda tmp_path, data: {"use_cache": False},
    "explicit default k_core": lambda tmp_path, data: {"k_core": 2},
    "same files in another data dir": _copied_dir,
    "only mtimes changed": _touched,
}


@pytest.mark.parametrize("variant", list(FINGERPRINT_STABLE))
def test_fingerprint_is_stable_otherwise(variant: str, cache: Path, tmp_path: Path) -> None:
    data, _ = _release(tmp_path, "filmtrust")
    first = load_dataset("filmtrust", data)
    kwargs = FINGERPRINT_STABLE[variant](tmp_path, data)
    again = load_dataset("filmtrust", kwargs.pop("data_dir_", data), **kwargs)
    assert first.fingerprint and again.fingerprint == first.fingerprint


# ================================================================= B. Yelp as published

YELP_PAIR_FILES = ["user_user.dat", "business_category.dat", "business_city.dat", "user_compliment.dat"]


def test_yelp_release_as_published_loads(tmp_path: Path) -> None:
    _, root = _release(tmp_path, "yelp")
    raw = yelp.load_raw(root)
    assert raw.raw_counts == {
        "users": 12,
        "items": 8,
        "interactions": 72,
        "rows": 72,
        "friends": 12,
        "categories": 4,
        "cities": 2,
        "compliments": 5,
    }
    cat = raw.labels["category"]
    assert cat.entity.tolist()[:4] == [0, 0, 1, 1]
    assert cat.names == [f"category_{c}" for c in (0, 1, 2, 3)]  # ids shifted to 0-based
    assert raw.labels["city"].entity.tolist() == list(range(8))


def _rewrite_line(path: Path, line: int, fields: list[str] | None) -> None:
    """Replace 1-based ``line`` of a tab-separated file (``None``: keep its first two fields only)."""
    lines = path.read_text().splitlines()
    old = lines[line - 1].split("\t")
    lines[line - 1] = "\t".join(old[:2] if fields is None else fields)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("file", YELP_PAIR_FILES)
def test_yelp_third_column_that_varies_is_rejected(file: str, tmp_path: Path) -> None:
    _, root = _release(tmp_path, "yelp")
    first = (root / file).read_text().splitlines()[2].split("\t")
    _rewrite_line(root / file, 3, [first[0], first[1], "2"])
    with pytest.raises(DataFormatError) as info:
        yelp.load_raw(root)
    assert info.value.path.name == file and info.value.line == 3, str(info.value)
    assert "'2'" in _text(info.value) and "same value" in _text(info.value)


@pytest.mark.parametrize("file", [*YELP_PAIR_FILES, "user_business.dat"])
@pytest.mark.parametrize("shape", ["four fields on line 1", "two fields on line 4"])
def test_yelp_wrong_field_count_names_file_and_line(file: str, shape: str, tmp_path: Path) -> None:
    _, root = _release(tmp_path, "yelp")
    if shape.startswith("four"):
        first = (root / file).read_text().splitlines()[0].split("\t")
        _rewrite_line(root / file, 1, [*first, "9"])
        line, got = 1, 4
    else:
        _rewrite_line(root / file, 4, None)
        line, got = 4, 2
    with pytest.raises(DataFormatError) as info:
        yelp.load_raw(root)
    assert info.value.path.name == file and info.value.line == line, str(info.value)
    assert f"got {got}" in _text(info.value)


SHARED_READER = {  # (sep, header, text with a constant third column, the same table without it)
    "comma pairs": (",", False, "0,1,1\n2,3,1\n", [[0, 2], [1, 3]]),
    "tab pairs with header": ("\t", True, "a\tb\tw\n5\t6\t1.0\n7\t8\t1.0\n", [[5, 7], [6, 8]]),
    "whitespace pairs": (None, False, "1  2 x\n3 4   x\n", [[1, 3], [2, 4]]),
}


@pytest.mark.parametrize("case", list(SHARED_READER))
def test_shared_reader_accepts_a_constant_third_column(case: str, tmp_path: Path) -> None:
    sep, header, text, expected = SHARED_READER[case]
    path = tmp_path / "pairs.dat"
    path.write_text(text)
    table = read_table(path, [Column("a"), Column("b")], sep=sep, header=header)
    assert list(table) == ["a", "b"] and [table["a"].tolist(), table["b"].tolist()] == expected
    lines = text.splitlines()
    lines[-1] = lines[-1].rstrip("0x.1") + "2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as info:
        read_table(path, [Column("a"), Column("b")], sep=sep, header=header)
    assert info.value.line == len(lines) and "same value" in _text(info.value)


def test_other_loaders_benefit_from_the_shared_reader(tmp_path: Path) -> None:
    """Amazon's comma pair files and Last.fm's friend file with a constant weight column."""
    _, root = _release(tmp_path, "amazon")
    plain = amazon.load_raw(root)
    for f in ("item_view.dat", "item_category.dat", "item_brand.dat"):
        (root / f).write_text("".join(line + ",1\n" for line in (root / f).read_text().splitlines()))
    assert_same(plain, amazon.load_raw(root))
    _, root = _release(tmp_path, "lastfm")
    plain = lastfm.load_raw(root)
    lines = (root / "user_friends.dat").read_text().splitlines()
    (root / "user_friends.dat").write_text("\n".join([lines[0]] + [f"{x}\t1" for x in lines[1:]]) + "\n")
    assert_same(plain, lastfm.load_raw(root))


# ======================================================== C. data errors that name the cause

EMPTY_HEADERS = {
    "lastfm": "userID\tartistID\tweight\n",
    "ml-100k": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n",
}
EMPTY_CASES = [
    ("filmtrust", "ratings.txt", "empty"),
    ("filmtrust", "ratings.txt", "whitespace"),
    ("amazon", "user_item.dat", "empty"),
    ("amazon", "user_item.dat", "whitespace"),
    ("yelp", "user_business.dat", "empty"),
    ("lastfm", "user_artists.dat", "header only"),
    ("lastfm", "user_artists.dat", "header and blank lines"),
    ("lastfm", "user_artists.dat", "empty"),
    ("ml-100k", "ml-100k.inter", "header only"),
    ("ciao", "rating.mat", "empty"),
]


@pytest.mark.parametrize("name, file, content", EMPTY_CASES)
def test_empty_interaction_file_says_it_is_empty(
    name: str, file: str, content: str, tmp_path: Path, cache: Path
) -> None:
    data, root = _release(tmp_path, name)
    if file.endswith(".mat"):
        scipy.io.savemat(root / file, {"rating": np.zeros((0, 5))})
    elif content.startswith("header"):
        (root / file).write_text(EMPTY_HEADERS[name] + ("" if content == "header only" else "  \n\t\n"))
    else:
        (root / file).write_text("" if content == "empty" else " \n\t\n   \n")
    with pytest.raises(DataFormatError) as info:
        load_dataset(name, data)
    msg = _text(info.value)
    assert info.value.path.name == file and "empty" in msg and "k_core" not in msg, msg


BIG = "12345678901234567890123"  # 23 digits: beyond int64
OVERFLOW_CASES = {
    "filmtrust ratings.txt": (filmtrust, "filmtrust", "ratings.txt", f"1 1 2\n{BIG} 2 4\n", 2, BIG),
    "filmtrust trust.txt negative": (
        filmtrust,
        "filmtrust",
        "trust.txt",
        f"1 2 1\n2 -{BIG} 1\n",
        2,
        f"-{BIG}",
    ),
    "amazon item_view.dat": (amazon, "amazon", "item_view.dat", f"0,0\n1,0\n1,{BIG}\n", 3, BIG),
    "amazon user_item.dat timestamp": (amazon, "amazon", "user_item.dat", f"0\t0\t5\t{BIG}\n", 1, BIG),
    "yelp user_user.dat": (yelp, "yelp", "user_user.dat", f"1\t2\t1\n{BIG}\t1\t1\n", 2, BIG),
    "lastfm user_friends.dat": (
        lastfm,
        "lastfm",
        "user_friends.dat",
        f"userID\tfriendID\n2\t3\n3\t{BIG}\n",
        3,
        BIG,
    ),
    "just above int64": (
        filmtrust,
        "filmtrust",
        "ratings.txt",
        "9223372036854775808 1 2\n",
        1,
        "9223372036854775808",
    ),
}


@pytest.mark.parametrize("case", list(OVERFLOW_CASES))
def test_id_beyond_int64_names_file_and_line(case: str, tmp_path: Path) -> None:
    module, name, file, text, line, value = OVERFLOW_CASES[case]
    _, root = _release(tmp_path, name)
    (root / file).write_text(text)
    with pytest.raises(DataFormatError) as info:
        module.load_raw(root)
    msg = _text(info.value)
    assert info.value.path.name == file and info.value.line == line, msg
    assert value in msg and "64-bit" in msg


def test_int64_extremes_still_load(tmp_path: Path) -> None:
    """The largest and smallest int64 values are ids, not overflows."""
    _, root = _release(tmp_path, "amazon")
    (root / "item_brand.dat").write_text("0,9223372036854775807\n1,-9223372036854775808\n")
    raw = amazon.load_raw(root)
    assert raw.labels["brand"].names == ["brand_-9223372036854775808", "brand_9223372036854775807"]


@pytest.mark.parametrize("value, row", [(1e23, 2), (-1e20, 3), (9.3e18, 1)])
def test_mat_id_beyond_int64_names_file_and_row(value: float, row: int, tmp_path: Path) -> None:
    _, root = _release(tmp_path, "ciao")
    rating = scipy.io.loadmat(root / "rating.mat")["rating"]
    rating[row - 1, 0] = value
    scipy.io.savemat(root / "rating.mat", {"rating": rating})
    with pytest.raises(DataFormatError) as info:
        ciao.load_raw(root)
    msg = _text(info.value)
    assert info.value.path.name == "rating.mat" and f"row {row}" in msg and "64-bit" in msg, msg


NOTHING_TO_SPLIT: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # name, release writer arguments (None: generated), load_dataset arguments
    "synthetic, 2 per user": (
        "synthetic",
        {},
        {"k_core": 1, "loader_args": {**SMALL_SYNTHETIC, "interactions_per_user": 2}},
    ),
    "filmtrust, 2 per user": ("filmtrust", {"per_user": 2}, {}),
    "amazon, 2 per user, k_core=1": ("amazon", {"per_user": 2}, {"k_core": 1}),
    "yelp, rating_threshold leaves <= 2": ("yelp", {}, {"k_core": 1, "rating_threshold": 5.0}),
}


@pytest.mark.parametrize("case", list(NOTHING_TO_SPLIT))
def test_nothing_to_evaluate_fails_at_build(case: str, tmp_path: Path, cache: Path) -> None:
    name, writer_args, load_args = NOTHING_TO_SPLIT[case]
    if name == "synthetic":
        data = None
    else:
        data, _ = _release(tmp_path, name, **writer_args)
    with pytest.raises(PmtrecError) as info:
        load_dataset(name, data, **load_args)
    msg = str(info.value)
    assert repr(name) in msg and "k_core" in msg and "at least 3 interactions" in msg, msg
    assert not (cache / PRE).is_dir() or _entries(cache) == []  # nothing cached


def _entries(cache: Path) -> list[Path]:
    return [p for p in (cache / PRE).iterdir() if not p.name.startswith(".")]


def test_one_splittable_user_is_enough(tmp_path: Path, cache: Path) -> None:
    data, root = _release(tmp_path, "filmtrust", per_user=2)
    with open(root / "ratings.txt", "a") as fh:
        fh.write("1 1 2\n1 2 2\n1 3 2\n1 4 2\n")  # user 1 now has at least 4 distinct items
    ds = load_dataset("filmtrust", data, k_core=1)
    assert len(ds.split.test) == 1 and len(ds.split.valid) == 1


# ====================================== E. FilmTrust trust values (issue 26, Poor, item 3)

#: (trust.txt lines, the 1-based lines holding 0): a row whose value is 0 says "no trust"
ZERO_TRUST = {
    "first-line": (["1 2 0", "2 3 1", "3 1 1"], [1]),
    "middle": (["1 2 1", "2 3 0", "3 1 1", "3 2 1"], [2]),
    "several-and-0.0": (["1 2 1", "2 3 0.0", "3 1 1", "1 3 0", "2 1 1"], [2, 4]),
}


@pytest.mark.parametrize("case", list(ZERO_TRUST))
def test_filmtrust_trust_rows_with_value_0_are_dropped_with_a_notice(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, every row was read as a trust link whatever its value."""
    lines, zero_lines = ZERO_TRUST[case]
    _, root = _release(tmp_path, "filmtrust")
    (root / "trust.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger=LOG):
        raw = filmtrust.load_raw(root)
    kept = [tuple(int(v) for v in ln.split()[:2]) for ln in lines if float(ln.split()[2]) == 1]
    src, dst = raw.user_relations["trust"]
    assert list(zip(src.tolist(), dst.tolist())) == kept
    assert raw.raw_counts["trust"] == len(kept) and raw.raw_counts["trust_value_0"] == len(zero_lines)
    notice = " ".join(_warnings(caplog))
    assert "trust.txt" in notice and f"{len(zero_lines)} row" in notice and f"line {zero_lines[0]}" in notice


@pytest.mark.parametrize(("value", "line"), [("2", 2), ("-1", 3), ("0.5", 1), ("1e3", 2)])
def test_filmtrust_trust_value_other_than_0_or_1_names_the_line(
    value: str, line: int, tmp_path: Path
) -> None:
    """A value that is neither trust (1) nor its absence (0) is not guessed at."""
    _, root = _release(tmp_path, "filmtrust")
    rows = ["1 2 1", "2 3 1", "3 1 1"]
    rows[line - 1] = rows[line - 1][:-1] + value
    (root / "trust.txt").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError) as info:
        filmtrust.load_raw(root)
    msg = _text(info.value)
    assert info.value.path.name == "trust.txt" and info.value.line == line, msg
    assert value in msg and "0 or 1" in msg, msg


def test_filmtrust_release_without_zeros_reads_as_before(tmp_path: Path) -> None:
    """No extra count and no notice when no row holds 0 (the real release: 1,853 rows of 1)."""
    _, root = _release(tmp_path, "filmtrust")
    rows = (root / "trust.txt").read_text().split()
    raw = filmtrust.load_raw(root)
    assert raw.raw_counts["trust"] == len(rows) // 3 and "trust_value_0" not in raw.raw_counts
