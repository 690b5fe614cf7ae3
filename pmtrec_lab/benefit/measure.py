"""Gather a benefit-map grid's per-entity validation metrics into one table, and the entity
features the map is binned by.

Each finished run of the grid (``plan.benefit_grid``) wrote ``per_user_valid.parquet`` and
``per_item_valid.parquet`` (the selected epoch's validation metrics, ``eval.items``). Those files
are run files (git-ignored, like the per-user test files); :func:`gather` keeps the one metric the
map needs in a long table that is committed beside the grid's other tables
(``per_entity_valid.parquet``, a few MB for a dataset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pmtrec_lab.compare.layout import finished_runs
from pmtrec_lab.compare.spec import GridSpec, leave_out_of, load_grid
from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.train.run import load_run

__all__ = [
    "ENTITY_FILE",
    "FULL",
    "NONE_LEFT",
    "TEST_ENTITY_FILE",
    "WEIGHTS_FILE",
    "entity_file",
    "entity_features",
    "gather",
    "gather_weights",
    "run_roles",
]

#: the committed table of a benefit-map grid's folder
ENTITY_FILE = "per_entity_valid.parquet"
#: the committed per-entity test table (the transfer check only; never used to choose)
TEST_ENTITY_FILE = "per_entity_test.parquet"
#: the committed table of a weightings grid's folder (``plan.weights_grid``)
WEIGHTS_FILE = "entity_weights.parquet"
#: the role of the run with every task, and the task name of "every auxiliary task" (single-task)
FULL, NONE_LEFT = "full", "all"


def run_roles(spec: GridSpec) -> dict[str, str]:
    """Grid label -> what its runs are: ``"full"`` (EW with every task), the one auxiliary task a
    variant leaves out, or ``"all"`` for single-task (every auxiliary task left out)."""
    roles: dict[str, str] = {}
    for method in spec.methods:
        left = leave_out_of(spec, method)
        if method == "ew":
            roles[method] = FULL
        elif method == "single-task":
            roles[method] = NONE_LEFT
        elif len(left) == 1:
            roles[method] = left[0]
    if FULL not in roles.values():
        raise ValueError(
            "a benefit-map grid needs the method 'ew' (every task), against which benefit is taken"
        )
    return roles


def entity_file(split: str) -> str:
    """The committed per-entity table of ``split`` (``valid``: the map's; ``test``: only for the
    check of whether validation benefit carries over to other held-out items)."""
    return f"per_entity_{split}.parquet"


def gather(out: str | Path, metric: str = "ndcg@20", split: str = "valid") -> pd.DataFrame:
    """One row per (run, side, entity) of the finished runs under ``out``: ``dataset``, ``method``,
    ``role`` (:func:`run_roles`), ``seed``, ``side`` (``user``/``item``), ``entity``, ``value`` (the
    ``metric`` on ``split``) and ``pairs`` (the entity's held-out pairs there).

    Raises ``FileNotFoundError`` naming the run and file when a finished run has no per-entity
    file of the split (it trained before they were written: retrain it)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    out = Path(out)
    spec = load_grid(out / "grid.resolved.yaml")
    frames = []
    roles = run_roles(spec)
    for dataset, method, _, seed, run in finished_runs(out, spec, list(roles)):
        for side in ("user", "item"):
            path = run / f"per_{side}_{split}.parquet"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: missing; the run finished before per-entity "
                    f"{split} metrics were written, so retrain it"
                )
            frame = pd.read_parquet(path)
            pairs = frame["pairs"] if "pairs" in frame else np.ones(len(frame), np.int64)
            frames.append(
                pd.DataFrame(
                    {
                        "dataset": dataset,
                        "method": method,
                        "role": roles[method],
                        "seed": seed,
                        "side": side,
                        "entity": frame[side].to_numpy(np.int64),
                        "value": frame[metric].to_numpy(np.float64),
                        "pairs": np.asarray(pairs, dtype=np.int64),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["dataset", "method", "role", "seed", "side", "entity", "value", "pairs"])
    return pd.concat(frames, ignore_index=True)


def gather_weights(out: str | Path) -> pd.DataFrame:
    """The per-entity task weights each finished run of a weightings grid learned, at the last epoch
    its diagnostics stored at or before its selected epoch (they store epochs 1, 2, 3, 5, 9, 17,
    ...): ``dataset``, ``method``, ``seed``, ``epoch``, ``side``, ``entity``, ``task``, ``weight``.
    Raises ``FileNotFoundError`` naming the file when a finished run has no stored weights."""
    out = Path(out)
    spec = load_grid(out / "grid.resolved.yaml")
    frames = []
    for dataset, method, _, seed, run in finished_runs(out, spec):
        path = run / "diagnostics" / "entity_weights.parquet"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing; the run recorded no per-entity weights "
                "(diagnostics off?), so retrain it with diagnostics on"
            )
        weights = pd.read_parquet(path)
        best = int(load_run(run).metrics.get("best_epoch") or 0)
        stored = sorted(int(e) for e in weights["epoch"].unique())
        epoch = max([e for e in stored if e <= best], default=stored[0])
        chosen = weights[weights["epoch"] == epoch]
        frames.append(
            pd.DataFrame(
                {
                    "dataset": dataset,
                    "method": method,
                    "seed": seed,
                    "epoch": epoch,
                    "side": chosen["side"].astype(str).to_numpy(),
                    "entity": chosen["entity"].to_numpy(np.int64),
                    "task": chosen["task"].astype(str).to_numpy(),
                    "weight": chosen["weight"].to_numpy(np.float64),
                }
            )
        )
    columns = ["dataset", "method", "seed", "epoch", "side", "entity", "task", "weight"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _degree(ids: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(np.asarray(ids, dtype=np.int64), minlength=size)[:size]


def entity_features(ds: RecDataset) -> pd.DataFrame:
    """Per entity of both sides: ``train_degree`` (training interactions), ``link_degree`` (links of
    the side's relations, both directions: social links for users, item-item links for items) and
    ``label_count`` (rows of the side's label sets). Columns ``side``, ``entity`` and those three."""
    frames = []
    for side, size, col in (("user", ds.num_users, 0), ("item", ds.num_items, 1)):
        links = np.zeros(size, dtype=np.int64)
        for rel in ds.relations.values():
            if rel.side == side:
                links += _degree(rel.src, size) + _degree(rel.dst, size)
        labels = np.zeros(size, dtype=np.int64)
        for lab in ds.labels.values():
            if lab.side == side:
                labels += _degree(lab.entity, size)
        frames.append(
            pd.DataFrame(
                {
                    "side": side,
                    "entity": np.arange(size, dtype=np.int64),
                    "train_degree": _degree(ds.split.train[:, col], size),
                    "link_degree": links,
                    "label_count": labels,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
