"""What ``pmtrec-lab tune`` writes and how ``compare --tuned`` reads it back (no Ray needed).

Layout under ``<out>/``: ``study.yaml`` (the budget, the same for every method: trials, max
epochs, the searcher and its seed, the scheduler and its settings, the grid's base
configuration), and per (dataset, method) ``<dataset>/<method>/trials.csv`` (one row per trial:
``trial``, ``trial_id``, every sampled setting, ``epochs_run``, ``best_valid_ndcg@20``,
``best_epoch``, ``stopped_early`` (ASHA stopped it), ``status``, ``error``) and
``<dataset>/<method>/best.yaml`` (the trial with the best validation NDCG@20: its learning rate,
weight decay and method parameters, its score, and the budget). Selection is on validation
only: no test metric is computed during tuning. While a unit runs, its finished trials are kept
in ``<dataset>/<method>/trials.partial.jsonl`` for a rerun to replay (``resume``); the file is
removed once the unit is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pmtrec_lab.compare.tuned import (
    BEST_FILE,
    STUDY_FILE,
    TRIALS_FILE,
    read_best,
    study_max_epochs,
    unit_dir,
    with_tuned,
)
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.paths import write_text_atomic

__all__ = [
    "BEST_FILE",
    "STUDY_FILE",
    "study_max_epochs",
    "TRIALS_FILE",
    "best_from_trials",
    "grid_trials",
    "load_trials",
    "read_best",
    "tuning_curves",
    "with_tuned",
    "write_unit",
]

SCORE_COLUMN = "best_valid_ndcg@20"


def best_from_trials(trials: pd.DataFrame) -> pd.Series:
    """The trial with the highest best validation NDCG@20 (the first of equal ones)."""
    scored = trials[trials[SCORE_COLUMN].notna()]
    if scored.empty:
        raise ConfigError("tune: no trial reported a validation NDCG@20; see trials.csv's error column")
    return scored.loc[scored[SCORE_COLUMN].idxmax()]


def write_unit(out: Path, dataset: str, method: str, trials: pd.DataFrame, best: dict[str, Any]) -> None:
    """``trials.csv`` then ``best.yaml`` (the mark that the unit is done), each atomically."""
    folder = unit_dir(out, dataset, method)
    write_text_atomic(folder / TRIALS_FILE, trials.to_csv(index=False))
    write_text_atomic(folder / BEST_FILE, yaml.safe_dump(best, sort_keys=False))


def load_trials(tuned_dir: Path) -> pd.DataFrame:
    """Every ``trials.csv`` under ``tuned_dir``, with ``dataset`` and ``method`` columns (empty
    when there is none)."""
    frames = []
    for path in sorted(Path(tuned_dir).glob(f"*/*/{TRIALS_FILE}")):
        f = pd.read_csv(path)
        f.insert(0, "method", path.parent.name)
        f.insert(0, "dataset", path.parent.parent.name)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def grid_trials(grid_dir: Path) -> pd.DataFrame:
    """The trials of the studies a tuned grid ran from (its ``grid.resolved.yaml``'s
    ``tuned.<dataset>.<method>.source`` names each ``best.yaml``; ``trials.csv`` lies beside it);
    empty for an untuned grid. A relative source is as ``compare`` was given it, from the folder
    it ran in: tried as it is, then from each folder above the grid's (a notebook's kernel runs
    elsewhere than the project root where ``compare`` ran)."""
    resolved = Path(grid_dir) / "grid.resolved.yaml"
    tuned = (yaml.safe_load(resolved.read_text()) or {}).get("tuned") if resolved.is_file() else None
    frames = []
    for dataset, methods in (tuned or {}).items():
        for method, choice in methods.items():
            path = _study_file(Path(str(choice.get("source", ""))).with_name(TRIALS_FILE), grid_dir)
            if path is not None:
                f = pd.read_csv(path)
                f.insert(0, "method", method)
                f.insert(0, "dataset", dataset)
                frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _study_file(path: Path, grid_dir: Path) -> Path | None:
    """``path`` where it exists: as given, or (relative) under a folder above ``grid_dir``."""
    if path.is_file():
        return path
    if path.is_absolute():
        return None
    return next((p / path for p in Path(grid_dir).resolve().parents if (p / path).is_file()), None)


def tuning_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method) and number of trials n: the best validation NDCG@20 among the first
    n trials (``best_so_far``): does the budget suffice?"""
    if trials.empty:
        return pd.DataFrame(columns=["dataset", "method", "trials", "best_so_far"])
    rows = []
    for (dataset, method), part in trials.sort_values("trial").groupby(["dataset", "method"], sort=False):
        best = part[SCORE_COLUMN].cummax().ffill()
        for n, value in zip(range(1, len(part) + 1), best):
            rows.append({"dataset": dataset, "method": method, "trials": n, "best_so_far": value})
    return pd.DataFrame(rows)
