"""Reference runs for a report: the same setting trained with equal weights and with the main
task alone (issue "PMTRec v3", item 7).

A multi-task method is worth its cost only where the auxiliary tasks help the main task, and it
should protect the main task where they hurt. A report run on its own shows neither. The
reference runs answer both:

- EW (every task at weight 1) against single-task training shows whether the auxiliary tasks,
  as they are, help this setting at all;
- the method against single-task shows whether it kept that help, or avoided the harm.

Each reference run is the report's configuration with only ``method`` replaced (no method
parameters): same data, split (meta split included), encoder, optimizer, epochs and seed. So it
is cached and reused like any other run (``train.cache``). These are test metrics of single
runs: they show the setting, and they choose nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pmtrec_lab.config import RunConfig
from pmtrec_lab.train.cache import cached_run
from pmtrec_lab.train.run import Run

__all__ = [
    "REFERENCE_METHODS",
    "reference_config",
    "reference_headlines",
    "reference_runs",
    "reference_summary",
    "reference_table",
]

#: the reference methods, in the order shown: equal weights, then the main task alone
REFERENCE_METHODS: tuple[str, ...] = ("ew", "single-task")


def reference_config(cfg: RunConfig, method: str) -> RunConfig:
    """``cfg`` with its method replaced by ``method`` (without parameters); all else unchanged."""
    out = cfg.model_copy(deep=True)
    out.method.params = {}  # replaced, not merged: the report method's parameters do not apply
    return out.updated({"method": {"name": method, "params": {}}})


def reference_runs(
    cfg: RunConfig, runs_dir: str | os.PathLike | None = None, **train_kwargs: Any
) -> dict[str, Run]:
    """The finished EW and single-task runs of ``cfg``'s setting (trained, or reused from the run
    cache under ``runs_dir``), keyed by method name."""
    return {m: cached_run(reference_config(cfg, m), runs_dir, **train_kwargs) for m in REFERENCE_METHODS}


def _metric(run: Run, split: str, metric: str) -> float:
    value = (run.metrics or {}).get(split, {}).get(metric)
    return float(value) if value is not None else math.nan


def reference_table(runs: Mapping[str, Run], metric: str = "ndcg@20") -> pd.DataFrame:
    """One row per run (the report's first, then the references; a report run of EW or
    single-task is its own reference, one row): ``method``, validation and test
    ``metric``, test recall@20, the selected epoch, and the relative change of the test metric
    against single-task and against EW (NaN where that reference is missing or zero)."""
    rows = [
        {
            "method": name,
            f"valid_{metric}": _metric(run, "valid", metric),
            f"test_{metric}": _metric(run, "test", metric),
            "test_recall@20": _metric(run, "test", "recall@20"),
            "best_epoch": (run.metrics or {}).get("best_epoch"),
        }
        for name, run in runs.items()
    ]
    table = pd.DataFrame(rows)
    test = table.set_index("method")[f"test_{metric}"]
    for ref, column in (("single-task", "vs_single_task"), ("ew", "vs_ew")):
        base = float(test.get(ref, math.nan))
        table[column] = table[f"test_{metric}"] / base - 1.0 if base > 0 else math.nan
    return table


def reference_summary(table: pd.DataFrame, dataset: str, metric: str = "ndcg@20") -> pd.DataFrame:
    """``reference_table`` as a one-seed comparison summary (``dataset, method, ndcg20_mean``),
    the input of ``viz.method_comparison``."""
    key = metric.replace("@", "")
    return pd.DataFrame(
        {"dataset": dataset, "method": table["method"], f"{key}_mean": table[f"test_{metric}"]}
    )


def reference_headlines(table: pd.DataFrame, metric: str = "ndcg@20") -> dict[str, Any]:
    """The report's summary of the comparison: each run's test metric, whether the auxiliary tasks
    helped (EW above single-task), and the report method's change against each reference."""
    by = table.set_index("method")
    first = str(table["method"].iloc[0])

    def num(value: Any) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    out: dict[str, Any] = {f"test_{metric}_{m}": num(by.loc[m, f"test_{metric}"]) for m in by.index}
    ew, single = out.get(f"test_{metric}_ew"), out.get(f"test_{metric}_single-task")
    out["aux_tasks_helped"] = None if ew is None or single is None else bool(ew > single)
    out["vs_single_task"] = num(by.loc[first, "vs_single_task"])
    out["vs_ew"] = num(by.loc[first, "vs_ew"])
    return out
