"""Where a grid's runs and tables live, and reading them back.

``<out>/runs/<dataset>/<method>/lr<lr>-seed<seed>/`` holds one run directory per run; the tables
(``TABLES``, as CSV) and ``summary.md`` sit in ``<out>/``, with ``per_user_ndcg.parquet`` (the
per-user test NDCG@20 the significance tests use, so a fresh clone rebuilds every table).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pmtrec_lab.compare.spec import METRIC, GridSpec
from pmtrec_lab.train.run import load_run

__all__ = [
    "PER_USER_FILE",
    "TABLES",
    "choose_lr",
    "collect",
    "gather_per_user",
    "grid_progress",
    "load_results",
    "run_path",
]

TABLES = (
    "summary",
    "lr_choice",
    "strongest_baseline",
    "significance",
    "significance_groups",
    "ablation",
    "progress",
)


PER_USER_FILE = "per_user_ndcg.parquet"


def run_path(out: Path, dataset: str, method: str, lr: float, seed: int) -> Path:
    return out / "runs" / dataset / method / f"lr{lr:g}-seed{seed}"


def _valid(run_dir: Path) -> float:
    m = load_run(run_dir).metrics
    return float(m.get("valid", {}).get(METRIC, float("nan")))


def choose_lr(out: Path, dataset: str, method: str, spec: GridSpec) -> float | None:
    """The learning rate with the best seed-0 validation NDCG@20 (None until all have finished)."""
    best, best_v = None, -math.inf
    for lr in spec.lrs:
        rd = run_path(out, dataset, method, lr, spec.seeds[0])
        if not (rd / "metrics.json").is_file():
            return None
        v = _valid(rd)
        if v > best_v:
            best, best_v = lr, v
    return best


def grid_progress(out: Path, spec: GridSpec) -> pd.DataFrame:
    """Per (dataset, method): finished runs, planned runs (``len(lrs) + len(seeds) - 1``) and the
    runs still to train (``lr<lr>-seed<seed>``; ``lr?`` while seed 0 has not chosen the rate)."""
    rows = []
    for dataset in spec.datasets:
        for method in spec.methods:
            lr = choose_lr(out, dataset, method, spec)
            planned = [(x, spec.seeds[0]) for x in spec.lrs]
            planned += [(lr, s) for s in spec.seeds[1:]]
            pending = [
                f"lr{'?' if x is None else f'{x:g}'}-seed{s}"
                for x, s in planned
                if x is None or not (run_path(out, dataset, method, x, s) / "metrics.json").is_file()
            ]
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "done": len(planned) - len(pending),
                    "planned": len(planned),
                    "pending": " ".join(pending),
                }
            )
    return pd.DataFrame(rows, columns=["dataset", "method", "done", "planned", "pending"])


def collect(out: Path, spec: GridSpec) -> pd.DataFrame:
    """One row per finished run: dataset, method, lr, seed, valid/test metrics, epochs."""
    rows = []
    for dataset in spec.datasets:
        for method in spec.methods:
            for lr in spec.lrs:
                for seed in spec.seeds:
                    rd = run_path(out, dataset, method, lr, seed)
                    if not (rd / "metrics.json").is_file():
                        continue
                    m = load_run(rd).metrics
                    rows.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "lr": lr,
                            "seed": seed,
                            "valid_ndcg@20": m["valid"].get("ndcg@20"),
                            "test_recall@20": m["test"].get("recall@20"),
                            "test_ndcg@20": m["test"].get("ndcg@20"),
                            "best_epoch": m.get("best_epoch"),
                            "epochs_run": m.get("epochs_run"),
                        }
                    )
    return pd.DataFrame(rows)


def gather_per_user(out: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-user test NDCG@20 and groups of the given runs (``dataset, method, seed, user, ndcg@20,
    activity, social``): from each run's own ``per_user_test.parquet`` where it exists, else from
    the grid's committed ``<out>/per_user_ndcg.parquet`` (run directories' per-user files are not
    committed, so a fresh clone rebuilds the significance tables from that one file)."""
    committed = out / PER_USER_FILE
    old = pd.read_parquet(committed) if committed.is_file() else None
    frames = []
    for r in runs.itertuples():
        p = Path(r.run_dir) / "per_user_test.parquet"
        if p.is_file():
            f = pd.read_parquet(p)
            f = f[[c for c in ("user", METRIC, "activity", "social") if c in f.columns]]
            for c in ("activity", "social"):
                if c in f.columns:
                    f[c] = f[c].astype(str)
            f.insert(0, "seed", r.seed)
            f.insert(0, "method", r.method)
            f.insert(0, "dataset", r.dataset)
        elif old is not None:
            f = old[(old["dataset"] == r.dataset) & (old["method"] == r.method) & (old["seed"] == r.seed)]
        else:
            continue
        frames.append(f)
    columns = ["dataset", "method", "seed", "user", METRIC, "activity", "social"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def load_results(out: str | Path) -> dict[str, pd.DataFrame]:
    """The committed result tables of a grid directory (empty dict when there are none)."""
    out = Path(out)
    tables = {}
    for name in TABLES:
        p = out / f"{name}.csv"
        if p.is_file() and p.stat().st_size > 1:
            tables[name] = pd.read_csv(p)
    return tables
