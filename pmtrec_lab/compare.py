"""``pmtrec-lab compare``: a resumable grid of methods x datasets x seeds, and its result tables.

Protocol (issue 4; ``../shared/docs/pmtrec-method.md``):
1. every method gets the same budget (MF, dim 64, at most ``epochs`` epochs, patience 5); the
   learning rate is chosen per (dataset, method) among ``lrs`` on seed 0's validation NDCG@20;
2. the chosen learning rate is run with the remaining seeds;
3. tables: mean and standard deviation of test Recall@20 and NDCG@20 per (dataset, method);
   the strongest baseline per dataset by mean validation NDCG@20; a Wilcoxon signed-rank test of
   PMTRec against it over per-user test NDCG@20 averaged over seeds; the same by user group.
4. the ablation table: PMTRec against its named configurations and EW.
Finished runs are never redone (``train`` returns them); unfinished ones resume from ``last.pt``.
``--jobs N`` runs the (dataset, method) units in N processes with the same results.
Test metrics never choose anything.

Layout under ``<out>/`` (commit everything but checkpoints and per-user files):
``grid.resolved.yaml`` (the grid as run), ``runs/<dataset>/<method>/lr<lr>-seed<seed>/`` (run
directories), ``summary.csv``, ``lr_choice.csv``, ``strongest_baseline.csv``, ``significance.csv``,
``significance_groups.csv``, ``ablation.csv``, ``summary.md`` (the tables as Markdown, for the
README).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from pmtrec_lab.config import RunConfig, load_config
from pmtrec_lab.data import dataset_for_config
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.eval.groups import ACTIVITY_LEVELS, SOCIAL_LEVELS
from pmtrec_lab.eval.significance import wilcoxon_paired
from pmtrec_lab.paths import atomic_path, write_text_atomic
from pmtrec_lab.train.run import load_run

#: the baselines of issue 4 (the strongest is chosen among these)
BASELINES: tuple[str, ...] = (
    "single-task",
    "ew",
    "uw",
    "dwa",
    "gradnorm",
    "mgda",
    "pcgrad",
    "cagrad",
    "imtl-g",
    "aligned-mtl",
    "nash-mtl",
    "famo",
    "db-mtl",
    "metabalance",
)
#: PMTRec and its named ablations
PMTREC_FAMILY: tuple[str, ...] = (
    "pmtrec",
    "pmtrec-no-personalization",
    "pmtrec-no-align",
    "pmtrec-no-schedule",
    "pmtrec-no-gmb",
    "pmtrec-gmb",
    "ew-align",
    "ew-gmb",
)
METRIC = "ndcg@20"
#: the order user groups are listed in (activity thirds, then social)
GROUP_ORDER = {level: i for i, level in enumerate((*ACTIVITY_LEVELS, *SOCIAL_LEVELS))}


class GridSpec(BaseModel):
    """A comparison grid (YAML). ``base`` is a nested RunConfig dict applied to every run."""

    model_config = ConfigDict(extra="forbid")
    datasets: list[str] = Field(default_factory=lambda: ["ciao", "lastfm", "amazon"])
    methods: list[str] = Field(default_factory=lambda: [*BASELINES, *PMTREC_FAMILY])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    lrs: list[float] = Field(default_factory=lambda: [1e-3, 3e-3])
    base: dict[str, Any] = Field(
        default_factory=lambda: {
            "encoder": {"name": "mf", "dim": 64},
            "optim": {"epochs": 100},
            "eval": {"patience": 5},
            "progress": "log",
        }
    )
    pmtrec: str = "pmtrec"
    #: named method variants usable in ``methods``: label -> {"name": method, "params": {...}}
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)


def load_grid(path: str | Path | None) -> GridSpec:
    if path is None:
        return GridSpec()
    return GridSpec.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def run_config(
    spec: GridSpec, dataset: str, method: str, lr: float, seed: int, data_dir: str | None
) -> RunConfig:
    cfg = load_config(base=spec.base)
    variant = spec.variants.get(method, {"name": method, "params": {}})
    return cfg.updated(
        {
            "data": {"name": dataset, "data_dir": data_dir or cfg.data.data_dir},
            "method": {"name": variant["name"], "params": variant.get("params", {})},
            "optim": {"lr": lr},
            "seed": seed,
        }
    )


def run_path(out: Path, dataset: str, method: str, lr: float, seed: int) -> Path:
    return out / "runs" / dataset / method / f"lr{lr:g}-seed{seed}"


def _valid(run_dir: Path) -> float:
    m = load_run(run_dir).metrics
    return float(m.get("valid", {}).get(METRIC, float("nan")))


def run_grid(
    spec: GridSpec,
    out: Path,
    data_dir: str | None = None,
    max_runs: int | None = None,
    jobs: int = 1,
) -> int:
    """Run (or resume) every run of the grid; returns the number of runs trained in this call.

    With ``jobs > 1`` the (dataset, method) units run in that many worker processes, each with
    ``torch.get_num_threads() // jobs`` threads (at least one); a unit's runs stay in order (its
    seed-0 learning rates, then its seeds), so the result is the same as a sequential grid's.
    """
    if jobs < 1:
        raise ConfigError(f"compare --jobs: expected a positive number of worker processes, got {jobs}")
    if jobs > 1 and max_runs is not None:
        raise ConfigError("compare: --max-runs counts runs of one process; it cannot be combined with --jobs")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "grid.resolved.yaml", yaml.safe_dump(spec.model_dump(), sort_keys=False))
    units = [(dataset, method) for dataset in spec.datasets for method in spec.methods]
    if jobs == 1:
        trained = 0
        for dataset, method in units:
            left = None if max_runs is None else max_runs - trained
            trained += run_unit(spec, out, dataset, method, data_dir, left)
            if max_runs is not None and trained >= max_runs:
                break
        return trained
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    ctx = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state in the workers
    trained = 0
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(run_unit, spec, out, d, m, data_dir) for d, m in units]
        try:
            for future in as_completed(futures):
                trained += future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return trained


def run_unit(
    spec: GridSpec, out: Path, dataset: str, method: str, data_dir: str | None, max_runs: int | None = None
) -> int:
    """One (dataset, method) of the grid: seed 0 at every learning rate, then the other seeds at
    the chosen one; finished runs are skipped. Returns the number of runs trained."""
    from pmtrec_lab.train import train

    trained = 0
    seed0 = spec.seeds[0]
    plan = [(lr, seed0) for lr in spec.lrs]
    for phase in (0, 1):
        if phase == 1:
            lr = choose_lr(out, dataset, method, spec)
            if lr is None:
                break
            plan = [(lr, s) for s in spec.seeds if s != seed0]
        for lr, seed in plan:
            rd = run_path(out, dataset, method, lr, seed)
            if (rd / "status.json").is_file() and load_run(rd).finished:
                continue
            if max_runs is not None and trained >= max_runs:
                return trained
            cfg = run_config(spec, dataset, method, lr, seed, data_dir)
            t0 = time.perf_counter()
            train(cfg, rd, dataset=dataset_for_config(cfg.data))
            trained += 1
            print(
                f"[compare] {dataset} {method} lr={lr:g} seed={seed}: {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    return trained


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


def summarize(out: Path, spec: GridSpec) -> dict[str, pd.DataFrame]:
    """Write the result tables (CSV + Markdown) from the finished runs; return them."""
    runs = collect(out, spec)
    if runs.empty:
        return {}
    chosen = []
    for (dataset, method), _ in runs.groupby(["dataset", "method"], sort=False):
        lr = choose_lr(out, dataset, method, spec)
        if lr is not None:
            chosen.append({"dataset": dataset, "method": method, "lr": lr})
    lr_choice = pd.DataFrame(chosen, columns=["dataset", "method", "lr"])
    sel = runs.merge(lr_choice, on=["dataset", "method", "lr"])
    sel["run_dir"] = [
        str(run_path(out, d, m, lr, s))
        for d, m, lr, s in zip(sel["dataset"], sel["method"], sel["lr"], sel["seed"])
    ]
    per_user = gather_per_user(out, sel)
    tables = {
        "lr_choice": lr_choice,
        **tables_from_runs(sel, spec.pmtrec, per_user=per_user),
        "progress": grid_progress(out, spec),
    }
    # keep the per-user rows the tests used: PMTRec, its configurations, EW, the strongest baselines
    used = {(d, spec.pmtrec) for d in sel["dataset"]}
    used |= set(zip(tables["ablation"]["dataset"], tables["ablation"]["method"]))
    used |= set(zip(tables["strongest_baseline"]["dataset"], tables["strongest_baseline"]["baseline"]))
    keep = [(d, m) in used for d, m in zip(per_user["dataset"], per_user["method"])]
    with atomic_path(out / PER_USER_FILE) as tmp:
        per_user[keep].to_parquet(tmp, index=False)
    for name, df in tables.items():
        write_text_atomic(out / f"{name}.csv", df.to_csv(index=False))
    write_text_atomic(out / "summary.md", markdown_tables(tables))
    return tables


def tables_from_runs(
    runs: pd.DataFrame,
    pmtrec: str = "pmtrec",
    is_baseline: Callable[[str], bool] | None = None,
    per_user: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """The result tables of a set of runs (one row per run; pure: reads per-user files, writes nothing).

    ``runs`` has columns ``dataset, method, seed, valid_ndcg@20, test_recall@20, test_ndcg@20,
    epochs_run, run_dir`` (``run_dir`` holds ``per_user_test.parquet``) and optionally ``lr``
    (every row of a (dataset, method) at one learning rate); ``per_user`` (see
    :func:`gather_per_user`), when given, replaces the run directories' per-user files. Returns:

    - ``summary``: per (dataset, method) ``[lr,] seeds, valid_ndcg20, recall20_mean, recall20_std,
      ndcg20_mean, ndcg20_std, epochs`` (std NaN with one seed);
    - ``strongest_baseline``: per dataset the baseline (``is_baseline``; default: in
      :data:`BASELINES`) with the best mean validation NDCG@20;
    - ``significance``: ``pmtrec`` vs that baseline, Wilcoxon over per-user test NDCG@20 averaged
      over seeds (``statistic, p_value, n, n_nonzero, mean_diff`` plus both means);
    - ``significance_groups``: the same test within each user group (activity, social);
    - ``ablation``: per dataset, ``pmtrec``, each of its named configurations and EW that were run,
      with their switches, test NDCG@20, the relative change against ``pmtrec`` and against EW, and
      a Wilcoxon test against ``pmtrec`` over per-user test NDCG@20 (see :func:`ablation_table`).
    """
    if is_baseline is None:
        is_baseline = BASELINES.__contains__
    aggs = {"lr": ("lr", "first")} if "lr" in runs.columns else {}
    summary = (
        runs.groupby(["dataset", "method"], sort=False)
        .agg(
            **aggs,
            seeds=("seed", "count"),
            valid_ndcg20=("valid_ndcg@20", "mean"),
            recall20_mean=("test_recall@20", "mean"),
            recall20_std=("test_recall@20", "std"),
            ndcg20_mean=("test_ndcg@20", "mean"),
            ndcg20_std=("test_ndcg@20", "std"),
            epochs=("epochs_run", "mean"),
        )
        .reset_index()
    )
    strongest, sig_rows, group_rows = [], [], []
    for dataset, part in summary.groupby("dataset", sort=False):
        base = part[part["method"].map(is_baseline).astype(bool)]
        if base.empty:
            continue
        baseline = base.loc[base["valid_ndcg20"].idxmax()]
        strongest.append(
            {"dataset": dataset, "baseline": baseline["method"], "valid_ndcg20": baseline["valid_ndcg20"]}
        )
        if pmtrec not in set(part["method"]):
            continue
        in_dataset = runs[runs["dataset"] == dataset]
        a = _per_user_mean(in_dataset[in_dataset["method"] == pmtrec], per_user)
        b = _per_user_mean(in_dataset[in_dataset["method"] == baseline["method"]], per_user)
        merged = _paired_users(a, b)
        if merged is None:
            continue
        seeds = part.set_index("method")["seeds"]
        sig_rows.append(
            {
                "dataset": dataset,
                "method": pmtrec,
                "baseline": baseline["method"],
                "pmtrec_seeds": int(seeds[pmtrec]),
                "baseline_seeds": int(seeds[baseline["method"]]),
                **_paired_test(merged),
            }
        )
        for col in ("activity", "social"):
            if f"{col}_a" not in merged:
                continue
            groups = dict(list(merged.groupby(f"{col}_a", observed=True)))
            for level in sorted(groups, key=lambda x: (GROUP_ORDER.get(str(x), len(GROUP_ORDER)), str(x))):
                g = groups[level]
                group_rows.append(
                    {
                        "dataset": dataset,
                        "grouping": col,
                        "group": level,
                        "baseline": baseline["method"],
                        **_paired_test(g),
                    }
                )
    return {
        "summary": summary,
        "strongest_baseline": pd.DataFrame(strongest, columns=["dataset", "baseline", "valid_ndcg20"]),
        "significance": pd.DataFrame(sig_rows),
        "significance_groups": pd.DataFrame(group_rows),
        "ablation": ablation_table(runs, summary, pmtrec, per_user),
    }


ABLATION_COLUMNS = (
    "dataset method weights align schedule rho seeds ndcg20_mean ndcg20_std "
    "rel_vs_pmtrec rel_vs_ew mean_diff p_value"
).split()
TABLES = (
    "summary",
    "lr_choice",
    "strongest_baseline",
    "significance",
    "significance_groups",
    "ablation",
    "progress",
)


def method_switches(method: str) -> dict[str, Any]:
    """The PMTRec modules a named configuration turns on (weights, alignment, schedule, GMB
    strength), read off the method itself so the table cannot drift from the presets; EW reads as
    uniform weights with every module off."""
    from pmtrec_lab.mtl import make_method
    from pmtrec_lab.mtl.pmtrec import PMTRec

    m = make_method(method, num_tasks=3)
    if not isinstance(m, PMTRec):
        return {"weights": "uniform", "align": False, "schedule": "none", "rho": 0.0}
    weights = "uniform" if math.isinf(m.tau) else m.weight_mode
    return {"weights": weights, "align": bool(m.align), "schedule": m.schedule, "rho": float(m.rho)}


def ablation_table(
    runs: pd.DataFrame, summary: pd.DataFrame, pmtrec: str = "pmtrec", per_user: pd.DataFrame | None = None
) -> pd.DataFrame:
    """PMTRec against its own named configurations and EW, per dataset (Yang et al., 2024,
    arXiv 2407.21364, ablate the same three modules).

    Columns: ``dataset, method, weights, align, schedule, rho, seeds, ndcg20_mean, ndcg20_std,
    rel_vs_pmtrec, rel_vs_ew`` (relative change of mean test NDCG@20) and, against ``pmtrec`` over
    per-user test NDCG@20 averaged over seeds, ``mean_diff, p_value`` (NaN for ``pmtrec`` itself).
    """
    family = [pmtrec, *[m for m in PMTREC_FAMILY if m != pmtrec], "ew"]
    rows = []
    for dataset, part in summary.groupby("dataset", sort=False):
        by_method = part.set_index("method")
        if pmtrec not in by_method.index:
            continue
        ref = by_method.loc[pmtrec, "ndcg20_mean"]
        ew = by_method.loc["ew", "ndcg20_mean"] if "ew" in by_method.index else math.nan
        in_dataset = runs[runs["dataset"] == dataset]
        ref_users = _per_user_mean(in_dataset[in_dataset["method"] == pmtrec], per_user)
        for method in family:
            if method not in by_method.index:
                continue
            r = by_method.loc[method]
            test = {"mean_diff": math.nan, "p_value": math.nan}
            if method != pmtrec:
                other = _per_user_mean(in_dataset[in_dataset["method"] == method], per_user)
                merged = _paired_users(other, ref_users)
                if merged is not None:
                    paired = _paired_test(merged)
                    test = {"mean_diff": paired["mean_diff"], "p_value": paired["p_value"]}
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    **method_switches(method),
                    "seeds": int(r["seeds"]),
                    "ndcg20_mean": r["ndcg20_mean"],
                    "ndcg20_std": r["ndcg20_std"],
                    "rel_vs_pmtrec": r["ndcg20_mean"] / ref - 1.0,
                    "rel_vs_ew": r["ndcg20_mean"] / ew - 1.0,
                    **test,
                }
            )
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def _paired_users(a: pd.DataFrame | None, b: pd.DataFrame | None) -> pd.DataFrame | None:
    """The users of both per-user tables (:func:`_per_user_mean`), columns suffixed ``_a`` / ``_b``;
    None when either table is missing or they share no user."""
    if a is None or b is None:
        return None
    merged = a.merge(b, on="user", suffixes=("_a", "_b"))
    return None if merged.empty else merged


def _paired_test(merged: pd.DataFrame) -> dict[str, Any]:
    """Both means and the Wilcoxon test of ``<METRIC>_a`` vs ``<METRIC>_b`` (one row per user)."""
    a, b = merged[f"{METRIC}_a"], merged[f"{METRIC}_b"]
    return {
        "pmtrec_ndcg20": float(a.mean()),
        "baseline_ndcg20": float(b.mean()),
        **wilcoxon_paired(a.to_numpy(), b.to_numpy()),
    }


def _per_user_mean(runs: pd.DataFrame, per_user: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Per-user test NDCG@20 averaged over the given runs, with the user's groups; None when
    there is none. Read from each run's ``per_user_test.parquet`` (``run_dir``) or, when
    ``per_user`` is given, from its rows of the runs' (dataset, method, seed)."""
    if per_user is not None:
        keys = runs[["dataset", "method", "seed"]].drop_duplicates()
        allf = per_user.merge(keys, on=["dataset", "method", "seed"])
    else:
        frames = [
            pd.read_parquet(Path(rd) / "per_user_test.parquet")
            for rd in runs["run_dir"]
            if (Path(rd) / "per_user_test.parquet").is_file()
        ]
        allf = pd.concat(frames) if frames else pd.DataFrame()
    if allf.empty:
        return None
    cols = [c for c in ("activity", "social") if c in allf.columns]
    mean = allf.groupby("user")[METRIC].mean().reset_index()
    if cols:
        mean = mean.merge(allf.drop_duplicates("user")[["user", *cols]], on="user")
    return mean


PER_USER_FILE = "per_user_ndcg.parquet"


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


def wide_table(summary: pd.DataFrame, metric: str = "ndcg20") -> str:
    """Markdown: one row per method, one column per dataset, ``mean ± std`` of the test metric
    (x100); the best mean per dataset in bold; ``(n)`` marks cells with fewer seeds than the most
    any method of the table has."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    known = {m: i for i, m in enumerate([*BASELINES, *PMTREC_FAMILY])}
    methods = sorted(dict.fromkeys(summary["method"]), key=lambda m: known.get(m, len(known)))
    full = int(summary["seeds"].max())
    cell = summary.set_index(["dataset", "method"])
    best = summary.groupby("dataset")[f"{metric}_mean"].max()
    lines = ["| method | " + " | ".join(datasets) + " |", "| --- |" + " --- |" * len(datasets)]
    for m in methods:
        row = []
        for d in datasets:
            if (d, m) not in cell.index:
                row.append("")
                continue
            r = cell.loc[(d, m)]
            text = _pm(r[f"{metric}_mean"], r[f"{metric}_std"])
            if r[f"{metric}_mean"] == best[d]:
                text = f"**{text}**"
            if int(r["seeds"]) < full:
                text += f" ({int(r['seeds'])})"
            row.append(text)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_tables(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    prog = tables.get("progress")
    if prog is not None and not prog.empty:
        done, planned = int(prog["done"].sum()), int(prog["planned"].sum())
        parts.append(
            f"Runs finished: {done} of {planned}" + (" (the grid is complete)." if done == planned else ".")
        )
        left = prog[prog["pending"] != ""]
        for dataset, part in left.groupby("dataset", sort=False):
            items = "; ".join(f"{m}: {p}" for m, p in zip(part["method"], part["pending"]))
            parts.append(f"Still to run on {dataset}: {items}.")
        parts.append("")
    s = tables.get("summary")
    if s is not None and not s.empty:
        parts.append("### Test NDCG@20 x100 by dataset (mean ± std over seeds; (n): only n seeds so far)\n")
        parts.append(wide_table(s))
        parts.append("")
        parts.append("### Test metrics (mean ± std over seeds, x100; lr chosen on seed-0 validation)\n")
        parts.append("| dataset | method | lr | seeds | valid NDCG@20 | Recall@20 | NDCG@20 |")
        parts.append("| --- | --- | --- | --- | --- | --- | --- |")
        for _, r in s.iterrows():
            parts.append(
                f"| {r['dataset']} | {r['method']} | {r['lr']:g} | {r['seeds']} | "
                f"{100 * r['valid_ndcg20']:.2f} | "
                f"{_pm(r['recall20_mean'], r['recall20_std'])} | {_pm(r['ndcg20_mean'], r['ndcg20_std'])} |"
            )
    sig = tables.get("significance")
    if sig is not None and not sig.empty:
        parts.append("\n### PMTRec vs the strongest baseline (Wilcoxon over per-user test NDCG@20)\n")
        parts.append("| dataset | baseline | seeds | PMTRec | baseline | mean diff | p | users |")
        parts.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for _, r in sig.iterrows():
            parts.append(
                f"| {r['dataset']} | {r['baseline']} | {r['pmtrec_seeds']} / {r['baseline_seeds']} | "
                f"{100 * r['pmtrec_ndcg20']:.2f} | {100 * r['baseline_ndcg20']:.2f} | "
                f"{100 * r['mean_diff']:+.2f} | {r['p_value']:.3g} | {r['n']} |"
            )
    g = tables.get("significance_groups")
    if g is not None and not g.empty:
        parts.append("\n### By user group\n")
        parts.append("| dataset | grouping | group | PMTRec | baseline | mean diff | p | users |")
        parts.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for _, r in g.iterrows():
            parts.append(
                f"| {r['dataset']} | {r['grouping']} | {r['group']} | {100 * r['pmtrec_ndcg20']:.2f} | "
                f"{100 * r['baseline_ndcg20']:.2f} | {100 * r['mean_diff']:+.2f} | "
                f"{r['p_value']:.3g} | {r['n']} |"
            )
    a = tables.get("ablation")
    if a is not None and not a.empty:
        parts.append("\n### Ablation: PMTRec's modules (test NDCG@20 x100; Wilcoxon against pmtrec)\n")
        parts.append(
            "| dataset | configuration | weights | align | schedule | rho | seeds | NDCG@20 "
            "| vs pmtrec | vs EW | p vs pmtrec |"
        )
        parts.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for _, r in a.iterrows():
            p = "" if pd.isna(r["p_value"]) else f"{r['p_value']:.3g}"
            parts.append(
                f"| {r['dataset']} | {r['method']} | {r['weights']} | {'on' if r['align'] else 'off'} | "
                f"{r['schedule']} | {r['rho']:g} | {r['seeds']} | {_pm(r['ndcg20_mean'], r['ndcg20_std'])} | "
                f"{_rel(r['rel_vs_pmtrec'])} | {_rel(r['rel_vs_ew'])} | {p} |"
            )
    return "\n".join(parts) + "\n"


def _rel(x: float) -> str:
    return "" if pd.isna(x) else f"{100 * x:+.1f}%"


def _pm(mean: float, std: float) -> str:
    s = 0.0 if std is None or (isinstance(std, float) and np.isnan(std)) else std
    return f"{100 * mean:.2f} ± {100 * s:.2f}"


def load_results(out: str | Path) -> dict[str, pd.DataFrame]:
    """The committed result tables of a grid directory (empty dict when there are none)."""
    out = Path(out)
    tables = {}
    for name in TABLES:
        p = out / f"{name}.csv"
        if p.is_file() and p.stat().st_size > 1:
            tables[name] = pd.read_csv(p)
    return tables


def _cmd_compare(args: argparse.Namespace) -> int:
    spec = load_grid(args.grid)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in GridSpec.model_fields:
            raise ValueError(f"--set {key}: unknown grid field; known: {sorted(GridSpec.model_fields)}")
        spec = spec.model_copy(update={key: yaml.safe_load(value)})
        spec = GridSpec.model_validate(spec.model_dump())
    out = Path(args.out)
    if args.tables_only:  # the grid the tables describe
        write_text_atomic(out / "grid.resolved.yaml", yaml.safe_dump(spec.model_dump(), sort_keys=False))
    else:
        run_grid(spec, out, args.data_dir, args.max_runs, args.jobs)
    tables = summarize(out, spec)
    if "summary" in tables:
        print(markdown_tables(tables))
    return 0


def add_compare_command(sub) -> None:
    p = sub.add_parser("compare", help="run a resumable grid of methods x datasets x seeds and write tables")
    p.add_argument("--grid", default=None, help="grid YAML (datasets, methods, seeds, lrs, base)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a grid field, e.g. datasets=[ciao] or seeds=[0]",
    )
    p.add_argument("--out", default="results/grid", help="grid directory (runs + tables)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-runs", type=int, default=None, help="stop after training this many runs")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes, one (dataset, method) each; threads are split between them",
    )
    p.add_argument("--tables-only", action="store_true", help="only rebuild tables from finished runs")
    p.set_defaults(func=_cmd_compare)
