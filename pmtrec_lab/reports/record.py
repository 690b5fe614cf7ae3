"""Record a notebook's headline values as JSON beside the executed notebook.

A report notebook ends with ``record({"ndcg@20": ndcg, "epochs": n_epochs})``. The report runner
(:func:`pmtrec_lab.reports.run_report`) sets ``PMTREC_RECORD_PATH`` in the environment of the
kernel it starts for each notebook, so the values land in ``<out_dir>/<notebook>.values.json``
and the index page and tests can read them without parsing notebook outputs. Run by hand (in
JupyterLab, no runner), the same call writes ``./<name>.values.json`` in the kernel's working
directory, so a notebook behaves the same inside and outside a report.

Values are headline numbers, not data: JSON scalars, short lists and small dicts of them.
numpy and torch scalars (and small arrays/tensors) are converted with ``.item()``/``.tolist()``;
non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` because strict JSON has
no literal for them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pmtrec_lab.paths import atomic_path

#: Environment variable naming the JSON file :func:`record` writes (set by the report runner).
RECORD_PATH_ENV = "PMTREC_RECORD_PATH"

#: Longest list (or array) accepted as one value: records are headlines, not datasets.
MAX_LIST_LEN = 1000

_DEFAULT_NAME = "notebook"


def write_report_text(target: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically, readable by all (0644).

    ``paths.atomic_path`` builds on ``mkstemp``, whose files are 0600; report files are meant to
    be served and shared, and their text (HTML with non-ASCII) must not depend on the locale.
    """
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)


def _to_jsonable(value: Any, where: str) -> Any:
    """Convert one value to plain JSON types; raise TypeError/ValueError naming ``where``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    # numpy / torch scalars and small arrays, recognised by their protocol (no import of either).
    if hasattr(value, "item") and (hasattr(value, "tolist") or hasattr(value, "numel")):
        if hasattr(value, "detach"):  # torch tensor: leave the autograd graph and the device
            value = value.detach().cpu()
        numel = value.numel() if hasattr(value, "numel") else int(getattr(value, "size", 1))
        if getattr(value, "ndim", 0) == 0:
            return _to_jsonable(value.item(), where)
        if numel > MAX_LIST_LEN:
            raise ValueError(f"{where}: array with {numel} elements; record at most {MAX_LIST_LEN}")
        return _to_jsonable(value.tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for key, sub in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: dict keys must be str, got {type(key).__name__} {key!r}")
            out[key] = _to_jsonable(sub, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_LEN:
            raise ValueError(f"{where}: list with {len(value)} items; record at most {MAX_LIST_LEN}")
        return [_to_jsonable(sub, f"{where}[{i}]") for i, sub in enumerate(value)]
    raise TypeError(f"{where}: cannot record a value of type {type(value).__module__}.{type(value).__name__}")


def to_jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``values`` converted to plain JSON types (see the module docstring for the rules)."""
    if not isinstance(values, Mapping):
        raise TypeError(f"record() takes a dict of values, got {type(values).__name__}")
    return _to_jsonable(values, "values")


def record_path(name: str | None = None, out_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`record` writes: ``out_dir/<name>.values.json`` if ``out_dir`` is given, else
    ``$PMTREC_RECORD_PATH`` if set (the report runner), else ``./<name>.values.json``."""
    filename = f"{name or _DEFAULT_NAME}.values.json"
    if out_dir is not None:
        return Path(out_dir) / filename
    env = os.environ.get(RECORD_PATH_ENV)
    if env:
        return Path(env)
    return Path.cwd() / filename


def record(values: dict[str, Any], name: str | None = None, out_dir: str | os.PathLike | None = None) -> Path:
    """Write a notebook's headline ``values`` to JSON (atomically) and return the file's path.

    Call it once, in the notebook's last cell: a second call replaces the file. ``name`` names the
    file when no runner set ``PMTREC_RECORD_PATH`` (default ``notebook``); an explicit ``out_dir``
    wins over the environment. The call returns a Path, so end the cell with ``;`` or assign it
    (``_ = record(...)``) to keep the path out of the rendered report.
    """
    data = to_jsonable(values)
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    path = record_path(name, out_dir)
    write_report_text(path, text)
    return path


def load_recorded(path: str | os.PathLike) -> dict[str, Any]:
    """Read values written by :func:`record`; raise ValueError if the file holds no JSON object."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of recorded values, got {type(data).__name__}")
    return data
