"""A small comparison grid that a notebook can run itself, and the committed result tables.

The full protocol (learning rate chosen per method, many seeds, three datasets) lives in
``pmtrec_lab.compare`` and writes tables under ``results/``. Notebook 06 reads those by default
(:func:`find_results`). With ``run_small_grid=True`` it instead runs a few methods x 1-2 seeds
x few epochs on small data through ``cached_run`` (:func:`run_small_grid`; every run reused when
its configuration comes back) and builds the same kind of tables (:func:`summarize_grid`):
``summary`` with the column names of ``compare.summarize`` (so one figure function serves both),
the strongest baseline per dataset by mean *validation* NDCG@20, and a Wilcoxon signed-rank test
of PMTRec against it over per-user test NDCG@20 averaged over seeds, overall and by user group;
one implementation (``compare.tables_from_runs``) builds both. Test metrics choose nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pmtrec_lab.compare import METRIC, Executor, SequentialExecutor, load_results, tables_from_runs
from pmtrec_lab.compare import is_baseline as _registry_is_baseline
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.train import cached_run

__all__ = [
    "DEFAULT_GRID_METHODS",
    "find_results",
    "other_grids",
    "is_baseline",
    "run_small_grid",
    "summarize_grid",
]

#: A small, informative default: two baselines, PMTRec and two of its ablations.
DEFAULT_GRID_METHODS: tuple[str, ...] = (
    "ew",
    "pcgrad",
    "pmtrec",
    "pmtrec-no-personalization",
    "pmtrec-gmb",
)


def is_baseline(method: str) -> bool:
    """True for the comparison's baselines (registered with family ``"baseline"``), False for PMTRec
    and its configurations (``compare.is_baseline``)."""
    return _registry_is_baseline(method)


@dataclass(frozen=True)
class _SmallRun:
    """One run of the small grid: its notebook parameters and where cached runs live (picklable,
    so any ``compare`` executor can run it)."""

    params: dict[str, Any]
    runs_dir: str | None

    def __call__(self) -> dict[str, Any]:
        run = cached_run(notebook_config(**self.params), self.runs_dir)
        m = run.metrics
        return {
            "dataset": self.params["dataset"],
            "method": self.params["method"],
            "seed": int(self.params["seed"]),
            "run_dir": str(run.path),
            "best_epoch": m.get("best_epoch"),
            "epochs_run": m.get("epochs_run"),
            "seconds": m.get("seconds"),
            "valid_ndcg@20": m.get("valid", {}).get(METRIC),
            "test_recall@20": m.get("test", {}).get("recall@20"),
            "test_ndcg@20": m.get("test", {}).get(METRIC),
        }


def _call(job: _SmallRun) -> dict[str, Any]:
    return job()


def run_small_grid(
    methods: Sequence[str] = DEFAULT_GRID_METHODS,
    datasets: Sequence[str] = ("ml-100k",),
    seeds: Sequence[int] = (0,),
    base_params: Mapping[str, Any] | None = None,
    dataset_params: Mapping[str, Mapping[str, Any]] | None = None,
    runs_dir: str | Path | None = None,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """Train (or reuse) every (dataset, method, seed) and return one row per run.

    ``base_params`` are :func:`pmtrec_lab.reports.defaults.notebook_config` keyword arguments
    shared by all runs (epochs, lr, dim, ...); ``dataset_params[dataset]`` adds per-dataset ones
    (e.g. ``{"synthetic": {"loader_args": {"num_users": 300, "num_items": 200}}}``). The runs go
    through ``executor`` (the comparison grid's interface; default: one after another here).
    Columns: ``dataset, method, seed, run_dir, best_epoch, epochs_run, seconds, valid_ndcg@20,
    test_recall@20, test_ndcg@20``.
    """
    jobs = [
        _SmallRun(
            {
                **dict(base_params or {}),
                **dict((dataset_params or {}).get(dataset, {})),
                "dataset": dataset,
                "method": method,
                "seed": seed,
            },
            None if runs_dir is None else str(runs_dir),
        )
        for dataset in datasets
        for method in methods
        for seed in seeds
    ]
    return pd.DataFrame((executor or SequentialExecutor()).run(_call, jobs))


def summarize_grid(runs: pd.DataFrame, pmtrec: str = "pmtrec") -> dict[str, pd.DataFrame]:
    """Tables from :func:`run_small_grid`'s rows (``compare.tables_from_runs``, baselines by
    :func:`is_baseline`): ``summary``, ``strongest_baseline`` (by mean validation NDCG@20),
    ``significance`` (PMTRec vs it, Wilcoxon over per-user test NDCG@20 averaged over seeds) and
    ``significance_groups`` (the same by user group). Empty dict when there are no runs."""
    if runs.empty:
        return {}
    return tables_from_runs(runs, pmtrec, is_baseline=is_baseline)


def find_results(results_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The committed comparison tables under ``results_dir`` (``compare.load_results``), looking in
    the folder itself and in every sub-folder holding a ``summary.csv``; tables of several
    grids are concatenated. Empty dict when there are none (or the folder does not exist)."""
    root = Path(results_dir)
    if not root.is_dir():
        return {}
    dirs = sorted({p.parent for p in root.rglob("summary.csv")})
    merged: dict[str, list[pd.DataFrame]] = {}
    for d in dirs:
        for name, table in load_results(d).items():
            merged.setdefault(name, []).append(table)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in merged.items()}


#: what each committed comparison grid ran (``results/<folder>``), for notebook 06's labels
GRID_LABELS = {
    "grid": "PMTRec v2 grid (there `pmtrec` is v2)",
    "grid-v3": "PMTRec v3 grid (`pmtrec` is the v3 default, `pmtrec-v2` is v2)",
    "grid-v3-tuned": "PMTRec v3, tuning pilot (ASHA grace 1, 100 epochs: not the tuning protocol)",
    "grid-v3-tuned-study": "PMTRec v3 and its baselines, each tuned by the equal-budget study "
    "(20 trials x 200 epochs, TPE + ASHA from epoch 10; results/tuned-study)",
    "grid-v3-analytic": "PMTRec v3 grid's runs again with the closed-form task gradients",
    "grid-v3-new-defaults": "PMTRec v3 grid's runs again under today's defaults "
    "(closed-form task gradients, 10% auxiliary holdout)",
}


def other_grids(results: str | Path, shown: str | Path) -> list[tuple[str, str, dict[str, pd.DataFrame]]]:
    """The committed comparison grids under ``results`` (folders named ``grid*`` with a
    ``summary.csv``) other than ``shown``: ``(label, folder name, tables)`` in folder order, the
    label saying which PMTRec each ran (:data:`GRID_LABELS`, else the folder name)."""
    root, shown = Path(results), Path(shown).resolve()
    found = []
    for folder in sorted(root.glob("grid*")):
        if folder.is_dir() and folder.resolve() != shown and (folder / "summary.csv").is_file():
            tables = load_results(folder)
            if "summary" in tables:
                found.append((GRID_LABELS.get(folder.name, folder.name), folder.name, tables))
    return found
