"""Reading tuned configurations back (``compare --tuned DIR``): a study folder's
``<dataset>/<method>/best.yaml`` and ``study.yaml``, as ``pmtrec-lab tune`` writes them
(``tune.output`` writes them with these names). Here, not in ``tune``, so that compare never
imports tune (tune sits on compare)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pmtrec_lab.compare.spec import GridSpec, validate_grid
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.yaml_files import load_yaml_text

__all__ = [
    "BEST_FILE",
    "STUDY_FILE",
    "TRIALS_FILE",
    "read_best",
    "study_max_epochs",
    "unit_dir",
    "with_tuned",
]

STUDY_FILE = "study.yaml"
TRIALS_FILE = "trials.csv"
BEST_FILE = "best.yaml"


def unit_dir(out: Path, dataset: str, method: str) -> Path:
    return Path(out) / dataset / method


def read_best(path: Path) -> dict[str, Any]:
    """A ``best.yaml``; a ``ConfigError`` naming the file when it is missing or malformed."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"compare --tuned: {path} not found; run 'pmtrec-lab tune' for it first") from None
    best = load_yaml_text(text, f"compare --tuned: {path}")
    if not isinstance(best, dict) or "lr" not in best:
        raise ConfigError(f"compare --tuned: {path}: not a best.yaml of 'pmtrec-lab tune' (no lr)")
    return best


def study_max_epochs(tuned_dir: Path) -> int | None:
    """The epoch budget of one trial in the study under ``tuned_dir`` (``study.yaml``'s
    ``budget.max_epochs``); None when the folder has no ``study.yaml``."""
    path = Path(tuned_dir) / STUDY_FILE
    if not path.is_file():
        return None
    budget = (yaml.safe_load(path.read_text()) or {}).get("budget") or {}
    value = budget.get("max_epochs")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{path}: budget.max_epochs must be a positive integer, got {value!r}")
    return value


def with_tuned(spec: GridSpec, tuned_dir: Path) -> GridSpec:
    """The grid with every (dataset, method) set to its tuned configuration (``GridSpec.tuned``),
    read from ``<tuned_dir>/<dataset>/<method>/best.yaml``; validated again. Its runs train the
    study's epoch budget (``study.yaml``'s ``max_epochs`` replaces the grid's ``optim.epochs``):
    a configuration chosen for what it reached within N epochs is retrained with N, not with the
    untuned grid's cap."""
    tuned: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in spec.datasets:
        for method in spec.methods:
            path = unit_dir(tuned_dir, dataset, method) / BEST_FILE
            best = read_best(path)
            if best.get("dataset", dataset) != dataset or best.get("method", method) != method:
                raise ConfigError(
                    f"compare --tuned: {path} is for {best.get('dataset')}/{best.get('method')}, "
                    f"expected {dataset}/{method}"
                )
            tuned.setdefault(dataset, {})[method] = {
                "lr": float(best["lr"]),
                "weight_decay": float(best.get("weight_decay", 0.0)),
                "params": dict(best.get("params") or {}),
                "source": str(path),
            }
    data = spec.model_dump()
    max_epochs = study_max_epochs(tuned_dir)
    if max_epochs is not None:
        base = dict(data["base"])
        base["optim"] = {**(base.get("optim") or {}), "epochs": max_epochs}
        data["base"] = base
    return validate_grid({**data, "tuned": tuned}, f"compare --tuned {tuned_dir}")
