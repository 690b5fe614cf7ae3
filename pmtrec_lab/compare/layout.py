"""Where a grid's runs and tables live, and reading them back.

``<out>/runs/<dataset>/<method>/<run name>/`` holds one run directory per run; the tables
(``TABLES``, as CSV) and ``summary.md`` sit in ``<out>/``, with ``per_user_ndcg.parquet`` (the
per-user test NDCG@20 the significance tests use, so a fresh clone rebuilds every table).

Run names (``run_name``): ``lr<lr:g>-seed<seed>-<hash>``, a readable prefix (``run_prefix``) and
the first 8 hex digits of a SHA-256 over the run's resolved parameters (``run_key``: the
registered method the label runs, every parameter it runs with after defaults and preset,
``resolve_params``, the exact learning rate and the seed). The dataset and the method label are
the folders above. So runs that differ in anything the grid varies never share a folder (a
variant label whose parameters changed, two rates that print alike), and one run spelled two
ways (a default written out or omitted, ``0`` or ``0.0``) keeps its folder and resumes. The
``base`` configuration is not hashed: it is one per grid, and it holds machine-local settings
(``data.data_dir``, ``progress``) that must not rename runs.

Old names: runs made before the hash (every committed run under ``results/grid/runs`` and
``results/tuning/runs``) live in ``lr<lr:g>-seed<seed>/``. The rule (``run_path``): the new name
when its folder exists or when neither exists (a new run is written there); the old name only
when the new-name folder does not exist and the old-name one does. The old folder is taken as
it is (its parameters are not compared), so editing a variant's parameters in place under the
same label reuses its old-name runs: give the changed variant a new label.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pmtrec_lab.compare.spec import (
    METRIC,
    GridSpec,
    leave_out_of,
    load_grid,
    lr_label,
    resolved_method,
    tuned_choice,
    unit_lrs,
)
from pmtrec_lab.train.run import INTERRUPTED, load_run

__all__ = [
    "PER_USER_FILE",
    "TABLES",
    "choose_lr",
    "collect",
    "failed_reason",
    "finished_runs",
    "give_up_reason",
    "gather_per_user",
    "grid_runs",
    "grid_progress",
    "load_results",
    "run_key",
    "run_name",
    "run_path",
    "renamed_runs",
    "run_label",
    "run_prefix",
    "warn_renamed",
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


#: how many hex digits of the SHA-256 a run name keeps
HASH_DIGITS = 8


def run_prefix(lr: float, seed: int) -> str:
    """``lr<lr:g>-seed<seed>``: the readable start of a run name, the label of a pending run in
    ``grid_progress``, and the whole name of a run made before the hash (see the module docstring)."""
    return f"{lr_label(lr)}-seed{seed}"


def _canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces; floats as their shortest exact repr): one text
    for one value, so its hash names the run the same on every machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_key(spec: GridSpec, method: str, lr: float, seed: int, dataset: str | None = None) -> dict[str, Any]:
    """What a run's name hashes: the registered method a grid label runs, every parameter it runs
    with (``resolve_params``; on a ``dataset`` where the grid is tuned, the tuned ones) except
    those at their ``name_neutral`` value (parameters added later, at the value that behaves as
    before they existed), the exact learning rate and the seed, and for a tuned run its weight
    decay (untuned names unchanged), and for a variant that leaves tasks out, their names (other
    names unchanged)."""
    method_params = resolved_method(spec, method, dataset)
    from pmtrec_lab.mtl import get_entry

    neutral = get_entry(method_params["name"]).cls.Params.name_neutral
    params = {k: v for k, v in method_params["params"].items() if not (k in neutral and v == neutral[k])}
    key: dict[str, Any] = {
        "method": method_params["name"],
        "params": params,
        "lr": float(lr),
        "seed": int(seed),
    }
    choice = tuned_choice(spec, dataset, method)
    if choice is not None:
        key["weight_decay"] = float(choice.get("weight_decay", 0.0))
    left_out = leave_out_of(spec, method)
    if left_out:
        key["leave_out"] = left_out
    return key


def run_name(spec: GridSpec, method: str, lr: float, seed: int, dataset: str | None = None) -> str:
    """``lr<lr:g>-seed<seed>-<8 hex>``: the readable prefix and a short SHA-256 of ``run_key``
    (floats as their shortest exact repr, so 0.003 and 0.0030000001 differ)."""
    digest = hashlib.sha256(_canonical(run_key(spec, method, lr, seed, dataset)).encode()).hexdigest()
    return f"{run_prefix(lr, seed)}-{digest[:HASH_DIGITS]}"


def run_path(out: Path, spec: GridSpec, dataset: str, method: str, lr: float, seed: int) -> Path:
    """The run directory of one run of the grid: the new name (``run_name``) unless only a folder
    of the old name (``run_prefix``) exists, which is then used as it is (module docstring)."""
    folder = Path(out) / "runs" / dataset / method
    new = folder / run_name(spec, method, lr, seed, dataset)
    old = folder / run_prefix(lr, seed)
    return old if not new.exists() and old.exists() else new


def renamed_runs(out: Path, spec: GridSpec, dataset: str, method: str, lr: float, seed: int) -> list[str]:
    """Finished runs of this (dataset, method, lr, seed) under *other* hashed names: made when the
    method's parameters resolved differently (a parameter added, a default changed). They are not
    reused, since they may have trained differently; the grid says so instead of retraining
    silently (``warn_renamed``)."""
    folder = Path(out) / "runs" / dataset / method
    current = run_path(out, spec, dataset, method, lr, seed).name
    found = []
    for other in sorted(folder.glob(f"{run_prefix(lr, seed)}-*")):
        status = other / "status.json"
        if other.name != current and status.is_file():
            try:
                finished = json.loads(status.read_text()).get("state") == "finished"
            except (OSError, ValueError):
                finished = False
            if finished:
                found.append(other.name)
    return found


def warn_renamed(out: Path, spec: GridSpec, dataset: str, method: str, lr: float, seed: int) -> None:
    """Print a notice when ``renamed_runs`` finds any (the run about to train has a new name)."""
    others = renamed_runs(out, spec, dataset, method, lr, seed)
    if others:
        import sys

        print(
            f"[compare] notice: {dataset} {method} {run_prefix(lr, seed)}: {len(others)} finished run(s) "
            f"under other names ({', '.join(others)}) resolved the method's parameters differently (a "
            "parameter added or a default changed since); not reused, training under "
            f"{run_path(out, spec, dataset, method, lr, seed).name}",
            file=sys.stderr,
            flush=True,
        )


def _valid(run_dir: Path) -> float:
    m = load_run(run_dir).metrics
    return float(m.get("valid", {}).get(METRIC, float("nan")))


def choose_lr(out: Path, dataset: str, method: str, spec: GridSpec) -> float | None:
    """The learning rate with the best seed-0 validation NDCG@20. None until every seed-0 run has
    finished or given up (:func:`give_up_reason`: it failed, say its loss diverged at that rate, which
    makes the rate no candidate), and when every one gave up."""
    best, best_v = None, -math.inf
    for lr in unit_lrs(spec, dataset, method):
        rd = run_path(out, spec, dataset, method, lr, spec.seeds[0])
        if not (rd / "metrics.json").is_file():
            if give_up_reason(rd) is not None:
                continue
            return None
        v = _valid(rd)
        if v > best_v:
            best, best_v = lr, v
    return best


def give_up_reason(run_dir: Path) -> str | None:
    """Why the run's last attempt failed, when it failed for a reason of its own (None when it did
    not fail, or was interrupted): a grid does not train it again unless asked to
    (``compare --retry-failed``)."""
    reason = failed_reason(run_dir)
    return None if reason == INTERRUPTED else reason


def run_label(dataset: str, method: str, lr: float, seed: int) -> str:
    """``dataset/method/lr<lr>-seed<seed>``: how messages and failure lists name a run."""
    return f"{dataset}/{method}/{run_prefix(lr, seed)}"


def failed_reason(run_dir: Path) -> str | None:
    """The error of a run whose ``status.json`` says ``failed`` (None otherwise)."""
    status_file = Path(run_dir) / "status.json"
    if not status_file.is_file():
        return None
    try:
        status = json.loads(status_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(status, dict) or status.get("state") != "failed":
        return None
    return str(status.get("error") or "failed")


def grid_progress(out: Path, spec: GridSpec) -> pd.DataFrame:
    """Per (dataset, method): finished runs, planned runs (``len(lrs) + len(seeds) - 1``; one
    learning rate when tuned), the runs still to train (``run_prefix``: ``lr<lr>-seed<seed>``;
    ``lr?`` while seed 0 has not chosen the rate), and the runs whose last attempt failed, each
    with its error (``lr<lr>-seed<seed>: <error>``, separated by `` | ``)."""
    rows = []
    for dataset in spec.datasets:
        for method in spec.methods:
            lr = choose_lr(out, dataset, method, spec)
            planned = [(x, spec.seeds[0]) for x in unit_lrs(spec, dataset, method)]
            planned += [(lr, s) for s in spec.seeds[1:]]
            pending = [
                f"lr?-seed{s}" if x is None else run_prefix(x, s)
                for x, s in planned
                if x is None or not (run_path(out, spec, dataset, method, x, s) / "metrics.json").is_file()
            ]
            failed = []
            for x, s in planned:
                reason = None if x is None else failed_reason(run_path(out, spec, dataset, method, x, s))
                if reason is not None:
                    failed.append(f"{run_prefix(x, s)}: {' '.join(reason.split())}")
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "done": len(planned) - len(pending),
                    "planned": len(planned),
                    "pending": " ".join(pending),
                    "failed": " | ".join(failed),
                }
            )
    return pd.DataFrame(rows, columns=["dataset", "method", "done", "planned", "pending", "failed"])


#: the beyond-accuracy metrics (``items.json``, ``eval.beyond``) the tables carry, at cutoff 20
BEYOND_METRICS = ("itemcoverage@20", "averagepopularity@20", "giniindex@20", "tailpercentage@20")


def _beyond_columns(run_dir: Path) -> dict[str, float]:
    """``test_<metric>`` of ``BEYOND_METRICS`` from the run's ``items.json`` (runs trained before it
    existed have none: no columns, so older grids' tables are unchanged)."""
    path = Path(run_dir) / "items.json"
    if not path.is_file():
        return {}
    test = json.loads(path.read_text()).get("test", {})
    return {f"test_{name}": test[name] for name in BEYOND_METRICS if name in test}


#: the prefix of the per-run auxiliary-task columns (``metrics.json``'s ``aux``, ``data.aux_holdout``)
AUX_PREFIX = "test_aux/"


def _aux_columns(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``test_aux/<task>/<metric>`` from ``metrics.json``'s ``aux`` (only runs trained with
    ``data.aux_holdout`` have it: others have no columns, so their tables are unchanged)."""
    test = (metrics.get("aux") or {}).get("test") or {}
    return {f"{AUX_PREFIX}{task}/{k}": v for task, m in test.items() for k, v in m.items()}


def finished_runs(
    out: Path, spec: GridSpec, methods: Sequence[str] | None = None
) -> Iterator[tuple[str, str, float, int, Path]]:
    """``(dataset, method, lr, seed, run_dir)`` of every finished run (``metrics.json`` written) of
    the grid under ``out``, datasets first, then ``methods`` (default: the grid's), rates, seeds."""
    for dataset in spec.datasets:
        for method in spec.methods if methods is None else methods:
            for lr in unit_lrs(spec, dataset, method):
                for seed in spec.seeds:
                    rd = run_path(out, spec, dataset, method, lr, seed)
                    if (rd / "metrics.json").is_file():
                        yield dataset, method, lr, seed, rd


def collect(out: Path, spec: GridSpec) -> pd.DataFrame:
    """One row per finished run: dataset, method, lr, seed, valid/test metrics, epochs."""
    rows = []
    for dataset, method, lr, seed, rd in finished_runs(out, spec):
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
                "stopped": m.get("stopped"),
                **_beyond_columns(rd),
                **_aux_columns(m),
            }
        )
    return pd.DataFrame(rows)


def grid_runs(out: Path) -> tuple[GridSpec, pd.DataFrame]:
    """A grid folder's spec as last run (its ``grid.resolved.yaml``) and its finished runs
    (:func:`collect`)."""
    spec = load_grid(out / "grid.resolved.yaml")
    return spec, collect(out, spec)


def gather_per_user(
    out: Path, runs: pd.DataFrame, chosen_lr: Mapping[tuple[str, str], float] | None = None
) -> pd.DataFrame:
    """Per-user test NDCG@20 and groups of the given runs (``dataset, method, [lr,] seed, user,
    ndcg@20, activity, social``; ``lr`` when ``runs`` has it): from each run's own
    ``per_user_test.parquet`` where it exists, else from the grid's committed
    ``<out>/per_user_ndcg.parquet`` (run directories' per-user files are not committed, so a fresh
    clone rebuilds the significance tables from that one file). A committed file from before it
    kept every run has no ``lr`` column and held only runs at their chosen learning rate: its rows
    stand for a run only at ``chosen_lr[(dataset, method)]`` (every run when not given)."""
    committed = out / PER_USER_FILE
    old = pd.read_parquet(committed) if committed.is_file() else None
    with_lr = "lr" in runs.columns
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
        elif old is not None:
            sel = (old["dataset"] == r.dataset) & (old["method"] == r.method) & (old["seed"] == r.seed)
            if with_lr and "lr" in old.columns:
                sel &= old["lr"] == r.lr
            elif with_lr and chosen_lr is not None and chosen_lr.get((r.dataset, r.method)) != r.lr:
                continue
            f = old[sel].drop(columns=["dataset", "method", "lr"], errors="ignore")
        else:
            continue
        if with_lr:
            f.insert(0, "lr", r.lr)
        f.insert(0, "method", r.method)
        f.insert(0, "dataset", r.dataset)
        frames.append(f)
    keys = ["dataset", "method", *(["lr"] if with_lr else []), "seed"]
    if not frames:
        return pd.DataFrame(columns=[*keys, "user", METRIC, "activity", "social"])
    gathered = pd.concat(frames, ignore_index=True)
    return gathered[[*keys, *(c for c in gathered.columns if c not in keys)]]


def load_results(out: str | Path) -> dict[str, pd.DataFrame]:
    """The committed result tables of a grid directory (empty dict when there are none)."""
    out = Path(out)
    tables = {}
    for name in TABLES:
        p = out / f"{name}.csv"
        if p.is_file() and p.stat().st_size > 1:
            tables[name] = pd.read_csv(p)
    return tables
