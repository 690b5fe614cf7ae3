"""Run directories: what a training run writes, and one function to load it back.

Layout of ``<run>/``:
- ``config.yaml``: the resolved configuration;
- ``status.json``: ``{"state": "running" | "finished" | "failed", "error": ..., "epoch": ...}``;
- ``history.json``: one record per epoch (losses per task, validation metrics when evaluated,
  seconds);
- ``metrics.json``: ``{"best_epoch", "valid": {"ndcg@20": ...}, "test": {"recall@10": ...}, ...}``;
- ``per_user_test.parquet``: per-user test metrics with the user's groups;
- ``groups.json``: test metrics by user group (activity thirds; with/without social links);
- ``best.pt`` / ``last.pt``: checkpoints (best validation epoch / last finished epoch);
- ``diagnostics/``: see ``pmtrec_lab.train.diagnostics``.
Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pmtrec_lab.config import RunConfig, load_config
from pmtrec_lab.paths import atomic_path, write_text_atomic


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


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


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


def load_diagnostics(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The run's diagnostics tables: ``epochs``, ``cosine_hist``, ``entity_weights`` (empty if absent)."""
    d = Path(run_dir) / "diagnostics"
    out = {}
    for name in ("epochs", "cosine_hist", "entity_weights"):
        p = d / f"{name}.parquet"
        out[name] = pd.read_parquet(p) if p.is_file() else pd.DataFrame()
    return out


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by ``pmtrec_lab.train.train``."""
    p = Path(run_dir)
    if not (p / "config.yaml").is_file():
        raise FileNotFoundError(f"{p} is not a run directory (no config.yaml)")
    cfg = load_config(p / "config.yaml")
    status = read_json(p / "status.json") if (p / "status.json").is_file() else {}
    hist = pd.DataFrame(read_json(p / "history.json")) if (p / "history.json").is_file() else pd.DataFrame()
    metrics = read_json(p / "metrics.json") if (p / "metrics.json").is_file() else {}
    pu = p / "per_user_test.parquet"
    per_user = pd.read_parquet(pu) if pu.is_file() else None
    groups = read_json(p / "groups.json") if (p / "groups.json").is_file() else {}
    return Run(p, cfg, status, hist, metrics, per_user, groups)
