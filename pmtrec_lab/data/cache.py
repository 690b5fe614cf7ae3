"""The preprocessed-dataset cache: entries that cannot run code when read and that notice damage.

Whoever can write ``PMTREC_CACHE_DIR`` must not be able to run code in a process that loads a
dataset, and a damaged entry must not be served as data. So an entry holds no pickle. It is a
directory ``<cache>/preprocessed/<name>-<key>/`` with three files:

- ``arrays.npz``: every numpy array of the ``RecDataset`` (``np.savez``; read with
  ``allow_pickle=False``, so an object array in it is refused, never unpickled). Arrays of
  Python strings (object dtype) are stored as unicode arrays and restored to object dtype.
- ``meta.json``: everything else as JSON (names, sides, label names, raw counts, params, extra,
  split sizes), with arrays referenced by their member name in ``arrays.npz``. Only the data
  classes of ``pmtrec_lab.data.types`` named in ``_CLASSES`` are rebuilt; nothing is imported.
- ``manifest.json``: the cache format, the key, and the sha256 of the two other files.

An entry is written into a temporary directory beside it and renamed into place, so a reader
never sees half an entry. ``read_entry`` checks the format, the key and both checksums before
parsing anything; any problem raises ``CacheEntryError`` naming the file, and the caller
rebuilds the entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from pmtrec_lab.data.types import LabelSet, RecDataset, Relation, Split

#: bump when the entry layout or encoding changes: part of the cache key, so older entries
#: (including the pickles of format 1, ``<name>-<key>.pkl``) are never read
CACHE_FORMAT = 2

ARRAYS = "arrays.npz"
META = "meta.json"
MANIFEST = "manifest.json"

#: the only classes an entry can rebuild (by these names; nothing is imported from the entry)
_CLASSES: dict[str, type] = {cls.__name__: cls for cls in (RecDataset, Relation, LabelSet, Split)}
_TAGS = ("$array", "$scalar", "$tuple", "$dict", "$dataclass")


class CacheEntryError(Exception):
    """A cache entry that cannot be used (damaged, truncated, of another format): rebuild it."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NotStorableError(TypeError):
    """A dataset value the cache format cannot hold without pickle (the dataset is not cached)."""


# ------------------------------------------------------------------------------- encoding


class _Encoder:
    """Turns a value tree into JSON-able data, moving every numpy array into ``arrays``."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _store(self, arr: np.ndarray) -> str:
        name = f"a{len(self.arrays)}"
        self.arrays[name] = arr
        return name

    def encode(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if type(value) in (int, float):  # not subclasses (IntEnum, ...): they would not come back
            return value
        if isinstance(value, np.ndarray):
            return self._array(value, where)
        if isinstance(value, np.generic):
            if value.dtype.hasobject:
                raise NotStorableError(f"{where}: numpy object scalar")
            return {"$scalar": self._store(np.asarray(value))}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple) and type(value) is tuple:
            return {"$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict) and type(value) is dict:
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}
            return {
                "$dict": [
                    [self.encode(k, f"{where} key {k!r}"), self.encode(v, f"{where}[{k!r}]")]
                    for k, v in value.items()
                ]
            }
        if dataclasses.is_dataclass(value) and _CLASSES.get(type(value).__name__) is type(value):
            fields = {
                f.name: self.encode(getattr(value, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(value)
            }
            return {"$dataclass": type(value).__name__, "fields": fields}
        raise NotStorableError(f"{where}: {type(value).__module__}.{type(value).__qualname__}")

    def _array(self, arr: np.ndarray, where: str) -> dict[str, Any]:
        if arr.dtype == object:
            flat = arr.ravel()
            if not all(type(x) is str and not x.endswith("\x00") for x in flat):
                # numpy unicode arrays cannot hold other objects, nor keep trailing NULs
                raise NotStorableError(f"{where}: object array holding values other than plain str")
            if arr.size:
                text = np.array(flat.tolist(), dtype=str).reshape(arr.shape)
            else:
                text = np.zeros(arr.shape, dtype="<U1")
            return {"$array": self._store(text), "object": True}
        if arr.dtype.hasobject:
            raise NotStorableError(f"{where}: structured array with object fields")
        return {"$array": self._store(arr)}


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of ``_Encoder.encode``; unknown tags or classes raise ``ValueError``."""
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    tag = next((t for t in _TAGS if t in value), None)
    if tag is None:
        return {k: _decode(v, arrays) for k, v in value.items()}
    if tag == "$array":
        arr = arrays[value["$array"]]
        return arr.astype(object) if value.get("object") else arr
    if tag == "$scalar":
        arr = arrays[value["$scalar"]]
        if arr.shape != ():
            raise ValueError(f"scalar member {value['$scalar']} has shape {arr.shape}")
        return arr[()]
    if tag == "$tuple":
        return tuple(_decode(v, arrays) for v in value["$tuple"])
    if tag == "$dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in value["$dict"]}
    cls = _CLASSES.get(value["$dataclass"])
    if cls is None:
        raise ValueError(f"unknown class {value['$dataclass']!r}")
    return cls(**{k: _decode(v, arrays) for k, v in value["fields"].items()})


def encode_dataset(ds: RecDataset) -> tuple[bytes, bytes]:
    """``(arrays.npz bytes, meta.json bytes)`` of a dataset; ``NotStorableError`` if impossible."""
    enc = _Encoder()
    meta = {"format": CACHE_FORMAT, "dataset": enc.encode(ds, "dataset")}
    buf = io.BytesIO()
    np.savez(buf, **enc.arrays)
    # no sort_keys: dict order is part of the data (raw_counts, labels, ... keep file order)
    return buf.getvalue(), json.dumps(meta).encode("utf-8")


def decode_dataset(arrays_bytes: bytes, meta_bytes: bytes, where: Path) -> RecDataset:
    """Rebuild a dataset from the two payloads; ``CacheEntryError`` naming the file at fault."""
    try:
        with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise CacheEntryError(where / ARRAYS, f"unreadable array payload ({exc})") from None
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else meta!r}")
        ds = _decode(meta["dataset"], arrays)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise CacheEntryError(where / META, f"unreadable dataset description ({exc})") from None
    if type(ds) is not RecDataset:
        raise CacheEntryError(where / META, f"holds a {type(ds).__name__}, not a RecDataset")
    return ds


# ------------------------------------------------------------------------------ entries


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_entry(entry: Path, ds: RecDataset, key: str) -> None:
    """Write ``ds`` as the cache entry ``entry`` (a directory), atomically.

    The files go to a temporary directory beside ``entry`` (created with the umask's
    permissions), which is then renamed to ``entry``. If another process placed the entry
    first, ours is dropped: an entry's content is determined by its key.
    ``NotStorableError`` if the dataset holds a value the format cannot store.
    """
    arrays_bytes, meta_bytes = encode_dataset(ds)
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "files": {ARRAYS: _sha256(arrays_bytes), META: _sha256(meta_bytes)},
    }
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{entry.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        (tmp / ARRAYS).write_bytes(arrays_bytes)
        (tmp / META).write_bytes(meta_bytes)
        (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1))
        try:
            os.replace(tmp, entry)
        except OSError:
            if not entry.is_dir():  # not a concurrent writer's finished entry: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_entry(entry: Path, key: str) -> RecDataset:
    """The dataset stored in ``entry``, after checking format, key and checksums.

    Raises ``CacheEntryError`` naming the file at fault for anything else: a file where a
    directory should be (e.g. a planted pickle), a missing, truncated or altered file, a
    manifest of another format or key, a payload that would need pickle.
    """
    entry = Path(entry)
    if not entry.is_dir():
        raise CacheEntryError(entry, "not a cache entry directory (an old or foreign file)")
    try:
        manifest = json.loads((entry / MANIFEST).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CacheEntryError(entry / MANIFEST, "missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CacheEntryError(entry / MANIFEST, f"unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise CacheEntryError(entry / MANIFEST, f"cache format {got!r}, expected {CACHE_FORMAT}")
    if manifest.get("key") != key:
        raise CacheEntryError(entry / MANIFEST, f"key {manifest.get('key')!r}, expected {key!r}")
    sums = manifest.get("files")
    if not isinstance(sums, dict) or set(sums) != {ARRAYS, META}:
        raise CacheEntryError(entry / MANIFEST, f"lists files {sums!r}, expected {ARRAYS} and {META}")
    payload: dict[str, bytes] = {}
    for name in (ARRAYS, META):
        try:
            data = (entry / name).read_bytes()
        except OSError as exc:
            raise CacheEntryError(entry / name, f"unreadable ({exc.strerror or exc})") from None
        if _sha256(data) != sums[name]:
            raise CacheEntryError(entry / name, "checksum mismatch (damaged or altered)")
        payload[name] = data
    ds = decode_dataset(payload[ARRAYS], payload[META], entry)
    if ds.fingerprint != key:
        raise CacheEntryError(entry / META, f"fingerprint {ds.fingerprint!r}, expected {key!r}")
    return ds


def remove_entry(entry: Path) -> None:
    """Remove an unusable entry (directory, file or link), tolerating a concurrent removal.

    The entry is first renamed to a temporary name, so a writer can place a new one at once.
    """
    entry = Path(entry)
    trash = entry.parent / f".{entry.name}.{os.getpid()}.{uuid.uuid4().hex}.trash"
    try:
        os.replace(entry, trash)
    except FileNotFoundError:
        return
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)
