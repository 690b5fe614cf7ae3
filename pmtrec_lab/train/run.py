"""Run directories: what a training run writes, and one function to load it back.

Layout of ``<run>/``:
- ``config.yaml``: the resolved configuration (written first, before the dataset is built);
- ``status.json``: the run's mark and progress, kept current while it trains:
  ``{"tool": "pmtrec-lab", "schema": 2, "state": "running" | "paused" | "finished" | "failed",
  "epoch", "best_epoch", "best_value", "metric", "error", "data_fingerprint", "pid", "host",
  "updated"}``. ``tool`` marks the folder as a run folder: ``train`` refuses a non-empty folder
  without the mark (or the shape of a run folder from before it, ``LEGACY_SCHEMA``);
- ``.lock``: held (``flock``) by the process that trains, for the run's life;
- ``history.json``: one record per epoch (losses per task, validation metrics when evaluated,
  seconds);
- ``metrics.json``: ``{"schema": 2, "best_epoch", "valid": {"ndcg@20": ...}, "test": {...}, ...}``;
- ``per_user_test.parquet``: per-user test metrics with the user's groups;
- ``groups.json``: test metrics by user group (activity thirds; with/without social links);
- ``best.pt`` / ``last.pt``: checkpoints (best validation epoch / last finished epoch), read
  with ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted file
  cannot run code;
- ``diagnostics/``: see ``pmtrec_lab.train.diagnostics``.

**Epochs are counted from 1** in every file and message (``history.json``'s ``epoch``,
``best_epoch``, ``status.json``'s ``epoch`` = the last finished epoch, 0 before the first, the
diagnostics tables, the log's ``epoch 3/20``). Files from before schema 2 counted from 0 and are
converted when loaded (``load_run``).

Every file is written atomically (temporary file, then rename), with the umask's permissions.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pmtrec_lab.config import RunConfig, config_from_record, load_run_config
from pmtrec_lab.errors import ConfigError, PmtrecError
from pmtrec_lab.paths import atomic_path, write_text_atomic

#: the name ``status.json`` carries as its mark
TOOL = "pmtrec-lab"
#: version of the run folder's files (status.json, metrics.json, checkpoints); 2: epochs from 1
RUN_SCHEMA = 2
#: what a run folder without a ``schema`` is read as (0-based epochs)
LEGACY_SCHEMA = 1
#: the checkpoint container's ``format`` key
CHECKPOINT_FORMAT = "pmtrec-lab-checkpoint/2"
#: ``status.json``'s ``error`` of a run stopped by Ctrl-C: it resumes on the next call, it did not
#: give up
INTERRUPTED = "interrupted"


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any) -> str:
    """The text ``write_json`` writes for ``obj``."""
    return json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json_text(obj))


def read_json(path: Path) -> Any:
    """A run file's JSON; a :class:`RunFileError` naming the file when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFileError(path, f"is not valid JSON ({exc})") from None


class RunFileError(PmtrecError):
    """A file of a run folder is unreadable or not what pmtrec-lab writes there."""

    def __init__(self, path: str | Path, problem: str, hint: str | None = None):
        self.path = Path(path)
        hint = hint or "rerun the training with --restart to start over, or use another --out"
        super().__init__(f"{self.path} {problem}; {hint}")


# --- checkpoints: tensors and plain containers, so ``torch.load(weights_only=True)`` reads them
# (the diagnostics state holds DataFrames and numpy arrays: encoded here as tensors and lists).
# A column of strings (the diagnostics' task and side labels, one per row of a table that grows
# every epoch) is stored as integer codes and its distinct labels: element by element, it made
# saving ``last.pt`` the costliest part of a PMTRec grid run's epoch, and grow with every epoch.
_FRAME, _ARRAY, _STRINGS = "__pmtrec_frame__", "__pmtrec_ndarray__", "__pmtrec_strings__"


def _encode(obj: Any) -> Any:
    if isinstance(obj, pd.DataFrame):
        cols = {str(c): _encode(obj[c].to_numpy()) for c in obj.columns}
        return {_FRAME: list(cols), "data": list(cols.values())}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf":
            return {_ARRAY: torch.from_numpy(obj.copy())}
        strings = obj.ndim == 1 and obj.dtype.kind == "O"
        if strings and pd.api.types.infer_dtype(obj, skipna=False) == "string":
            codes, labels = pd.factorize(obj, use_na_sentinel=False)
            return {_STRINGS: torch.from_numpy(codes.astype(np.int64)), "labels": [str(v) for v in labels]}
        return {_ARRAY: [_encode(v) for v in obj.tolist()]}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_encode(v) for v in obj)
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if _FRAME in obj:
            return pd.DataFrame({c: _decode(v) for c, v in zip(obj[_FRAME], obj["data"])})
        if _STRINGS in obj:
            labels = np.empty(len(obj["labels"]), dtype=object)
            labels[:] = obj["labels"]
            return labels[obj[_STRINGS].numpy()]
        if _ARRAY in obj:
            v = obj[_ARRAY]
            if isinstance(v, torch.Tensor):
                return v.numpy()
            return np.array([_decode(x) for x in v], dtype=object)
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_decode(v) for v in obj)
    return obj


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that :func:`load_checkpoint` reads it without unpickling code."""
    try:
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, "state": _encode(state)}, tmp)
    except RuntimeError as exc:  # torch's writer reports a short write as "unexpected pos ..."
        raise RunFileError(
            path,
            f"could not be written ({exc}); is the disk full?",
            hint="free some space and rerun: the run resumes from its last finished epoch",
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``.

    A file that is damaged, crafted to run code, or from an older pmtrec-lab (schema 1 pickled
    DataFrames) raises a :class:`RunFileError` naming it, instead of running anything. The
    message never repeats torch's advice to turn the weights-only restriction off (that would run
    whatever the file holds), nor its warning about the pickle protocol."""
    path = Path(path)
    try:
        # Any exception is a damaged file: the weights-only unpickler meets arbitrary bytes with
        # UnpicklingError, RuntimeError, EOFError, ... but also IndexError and KeyError from its
        # own stack and memo (about 1 in 15 random files), so no list of types is complete.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ...": torch's, not ours
            box = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunFileError(path, _unloadable(exc)) from None
    if not isinstance(box, dict) or box.get("format") != CHECKPOINT_FORMAT:
        mark = f"no format mark {CHECKPOINT_FORMAT!r}"
        raise RunFileError(path, f"is not a checkpoint pmtrec-lab wrote ({mark})")
    try:
        return _decode(box["state"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise RunFileError(path, f"holds a damaged pmtrec-lab checkpoint ({why})") from None


#: words of torch's weights-only message that advise loading the file unsafely: never shown
_UNSAFE_ADVICE = ("weights_only", "trust", "safe_globals", "\x1b")


def _unloadable(exc: Exception) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in our words.

    torch's weights-only message advises rerunning ``torch.load`` with the restriction turned
    off or allow-listing the object: advice that runs the file's code, so only the object it
    names is kept from it."""
    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f"the Python object {found.group(1)}" if found else "Python objects"
        operand = re.search(r"Unsupported operand (\d+)", text)
        if operand and not found:
            what = f"pickle instructions (operand {operand.group(1)})"
        return (
            f"is not a checkpoint pmtrec-lab wrote: it holds {what}, where pmtrec-lab writes only "
            "tensors and plain containers; it was not loaded, and nothing in it ran"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if any(word in first for word in _UNSAFE_ADVICE):
        first = type(exc).__name__
    return f"is unreadable: damaged, or not a checkpoint pmtrec-lab wrote ({first[:200]})"


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): obj}


def config_differences(theirs: dict[str, Any], ours: dict[str, Any], limit: int = 4) -> list[str]:
    """The settings two configurations (``RunConfig.to_dict()``) differ in, as
    ``"encoder.dim is 16 there, 8 here"``; at most ``limit`` of them, then how many more."""
    a, b = _flat(theirs), _flat(ours)
    keys = [k for k in dict.fromkeys([*b, *a]) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    shown = [f"{k} is {a.get(k, '<unset>')!r} there, {b.get(k, '<unset>')!r} here" for k in keys[:limit]]
    if len(keys) > limit:
        shown.append(f"{len(keys) - limit} more")
    return shown


def _resolved_method(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration dict with its method's parameters resolved (defaults < preset < given), so
    a checkpoint that recorded only the given parameters and one that recorded all of them compare
    equal when they are the same run."""
    method = config.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("params"), dict):
        return config
    from pmtrec_lab.mtl import resolve_params

    try:
        params = resolve_params(method["name"], method["params"])
    except (ValueError, TypeError, KeyError):
        return config  # an unknown method or bad parameters: compared as written
    return {**config, "method": {**method, "params": params}}


def check_checkpoint_run(path: Path, state: dict[str, Any], run_config: dict[str, Any], hint: str) -> None:
    """A :class:`RunFileError` naming ``path`` and the settings that differ when the checkpoint
    ``state`` was written by a run of another configuration (``state["config"]``: checkpoints
    record their run's configuration, the progress display aside). A checkpoint from before that
    record passes here; :func:`load_model_state` still compares its shapes."""
    recorded = state.get("config")
    if not isinstance(recorded, dict):
        return
    # ``run_config`` is ``run_identity``'s, resolved when its configuration loaded; only the
    # checkpoint's record (which may predate resolved records, or settings added since: read as
    # the run trained, ``config_from_record``) is resolved here
    try:
        recorded = config_from_record(recorded).model_copy(update={"progress": "none"}).to_dict()
    except ConfigError:  # a record this version cannot read: compared as written
        pass
    recorded = _resolved_method(recorded)
    if recorded == run_config:
        return
    diffs = config_differences(recorded, run_config)
    raise RunFileError(path, f"was written by another run ({'; '.join(diffs)})", hint=hint)


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: Path, hint: str) -> None:
    """``model.load_state_dict(state)``, or a :class:`RunFileError` naming ``path`` and the
    tensors that do not fit (torch's own message is many lines of every mismatched key)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} is {list(state[k].shape)} there, {list(own[k].shape)} here"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    problems = [*shapes[:2], *(f"{k} missing" for k in missing[:2])]
    problems += [f"{k} not in this model" for k in extra[:2]]
    if problems:
        more = len(shapes) + len(missing) + len(extra) - len(problems)
        what = "; ".join(problems) + (f"; {more} more" if more > 0 else "")
        raise RunFileError(
            path, f"does not fit this run's model ({what}): another run's, or for other data", hint=hint
        )
    model.load_state_dict(state)


def make_status(state: str, **fields: Any) -> dict[str, Any]:
    """``status.json``'s content: the mark, the state, ``fields``, and who wrote it when."""
    return {
        "tool": TOOL,
        "schema": RUN_SCHEMA,
        "state": state,
        **fields,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_schema(status: dict[str, Any]) -> int:
    """The schema of a run folder's files, from its ``status.json`` (``LEGACY_SCHEMA`` if unmarked)."""
    return int(status.get("schema", LEGACY_SCHEMA)) if status.get("tool") == TOOL else LEGACY_SCHEMA


def is_run_folder(path: str | Path) -> bool:
    """True if ``path`` holds a pmtrec-lab run: a marked ``status.json``, or the shape of a run
    from before the mark (``config.yaml`` beside a ``status.json`` with a ``state``)."""
    p = Path(path)
    status_file = p / "status.json"
    if not status_file.is_file():
        return False
    try:
        status = json.loads(status_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    if not isinstance(status, dict):
        return False
    if status.get("tool") == TOOL:
        return True
    return "state" in status and (p / "config.yaml").is_file()


def status_damage(path: str | Path) -> str | None:
    """Why the file ``path`` (a run's ``status.json``) cannot be read as a status, or None when it
    can (or is absent): cut short by a crash, emptied, not text, or JSON that is not an object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc}"
    except UnicodeDecodeError:
        return "not text"
    if not isinstance(value, dict):
        return f"holds a JSON {type(value).__name__}, not an object"
    return None


def is_damaged_run_folder(path: str | Path) -> bool:
    """True if ``path`` holds a run whose ``status.json`` is damaged (:func:`status_damage`) but
    whose ``config.yaml`` is a pmtrec-lab configuration and which holds ``last.pt``: the run's
    progress is in ``last.pt``, so it resumes from there (``train`` says so) instead of being
    refused as "not a run folder". A folder of the user's own files is not mistaken for one:
    all three are needed, the configuration valid."""
    p = Path(path)
    if status_damage(p / "status.json") is None or not (p / "last.pt").is_file():
        return False
    try:
        load_run_config(p / "config.yaml")
    except (ConfigError, OSError):
        return False
    return True


def upgrade_metrics(metrics: dict[str, Any], schema: int) -> dict[str, Any]:
    """``metrics.json`` in the current schema: schema 1 counted ``best_epoch`` from 0."""
    if not metrics or metrics.get("schema", schema) >= RUN_SCHEMA:
        return metrics
    out = dict(metrics)
    be = out.get("best_epoch")
    if isinstance(be, int) and be >= 0:
        out["best_epoch"] = be + 1
    elif isinstance(be, int):
        out["best_epoch"] = None  # -1 before: no evaluated epoch
    out["schema"] = RUN_SCHEMA
    return out


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


@dataclass
class Run:
    """A run directory loaded back (for notebooks, comparisons and reports)."""

    path: Path
    config: RunConfig
    status: dict[str, Any]
    history: pd.DataFrame
    metrics: dict[str, Any]
    per_user: pd.DataFrame | None
    groups: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status.get("state") == "finished"

    def diagnostics(self) -> dict[str, pd.DataFrame]:
        return load_diagnostics(self.path)

    def level_rounds(self) -> list[dict[str, Any]]:
        """``level_selection.json``: PMTRec v4's rounds of in-run level selection (``[]`` for a run
        without ``level_select``); a damaged file raises a :class:`RunFileError` naming it."""
        return _json_file(self.path / "level_selection.json", list, [])


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise RunFileError(path, f"is not a readable Parquet file ({type(exc).__name__}: {exc})") from None


def load_diagnostics(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The run's diagnostics tables: ``epochs``, ``cosine_hist``, ``entity_weights`` (empty if
    absent), with epochs counted from 1 (a run of schema 1 is converted)."""
    run_dir = Path(run_dir)
    status_file = run_dir / "status.json"
    status = read_json(status_file) if status_file.is_file() else {}
    shift = 1 if run_schema(status if isinstance(status, dict) else {}) < RUN_SCHEMA else 0
    d = run_dir / "diagnostics"
    out = {}
    for name in ("epochs", "cosine_hist", "entity_weights"):
        p = d / f"{name}.parquet"
        df = _read_parquet(p) if p.is_file() else pd.DataFrame()
        if shift and "epoch" in df.columns:
            df["epoch"] = df["epoch"] + shift
        out[name] = df
    return out


def _json_file(path: Path, kind: type, default: Any) -> Any:
    if not path.is_file():
        return default
    value = read_json(path)
    if not isinstance(value, kind):
        raise RunFileError(path, f"holds a {type(value).__name__}, expected a JSON {kind.__name__}")
    return value


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by ``pmtrec_lab.train.train``; files of an older schema are
    converted (epochs counted from 1). A damaged file raises a :class:`RunFileError` naming it."""
    p = Path(run_dir)
    if not (p / "config.yaml").is_file():
        raise FileNotFoundError(f"{p} is not a run directory (no config.yaml)")
    cfg = load_run_config(p / "config.yaml")
    status = _json_file(p / "status.json", dict, {})
    schema = run_schema(status)
    records = _json_file(p / "history.json", list, [])
    hist = pd.DataFrame(records)
    if schema < RUN_SCHEMA and "epoch" in hist.columns:
        hist["epoch"] = hist["epoch"] + 1
    metrics = upgrade_metrics(_json_file(p / "metrics.json", dict, {}), schema)
    if schema < RUN_SCHEMA and status:
        status = {**status, "schema": RUN_SCHEMA}
        if isinstance(status.get("epoch"), int):
            status["epoch"] = status["epoch"] + 1  # schema 1: the last finished epoch's 0-based index
    pu = p / "per_user_test.parquet"
    per_user = _read_parquet(pu) if pu.is_file() else None
    groups = _json_file(p / "groups.json", dict, {})
    return Run(p, cfg, status, hist, metrics, per_user, groups)
