"""The comparison's result tables: summary, learning-rate choice, strongest baseline, significance
(overall and by user group), PMTRec's ablation, and their Markdown rendering. Pure functions of
the runs' metrics and per-user files, except ``summarize``, which also writes them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pmtrec_lab.compare.layout import (
    AUX_PREFIX,
    PER_USER_FILE,
    choose_lr,
    collect,
    gather_per_user,
    grid_progress,
    run_path,
)
from pmtrec_lab.compare.spec import GROUP_ORDER, GridSpec, baseline_methods, pmtrec_family
from pmtrec_lab.compare.stats import paired_test, paired_users, per_user_mean
from pmtrec_lab.mtl import method_names
from pmtrec_lab.paths import atomic_path, write_text_atomic

__all__ = [
    "ABLATION_COLUMNS",
    "ablation_table",
    "grid_baselines",
    "markdown_tables",
    "method_switches",
    "summarize",
    "tables_from_runs",
    "wide_table",
]


#: summary column -> the per-run beyond-accuracy column it averages (``layout.BEYOND_METRICS``)
BEYOND_SUMMARY = {
    "coverage20": "test_itemcoverage@20",
    "avgpop20": "test_averagepopularity@20",
    "gini20": "test_giniindex@20",
    "tail20": "test_tailpercentage@20",
}


def _beyond_aggregates(runs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """The summary's beyond-accuracy means, only where runs carry them (older grids: none)."""
    return {
        name: (column, "mean")
        for name, column in BEYOND_SUMMARY.items()
        if column in runs.columns and runs[column].notna().any()
    }


def _aux_aggregates(runs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """The summary's auxiliary-task test means, ``aux/<task>/<metric>``, one column per (task,
    metric) that some run has (``data.aux_holdout``; grids without it: none)."""
    return {
        "aux/" + column[len(AUX_PREFIX) :]: (column, "mean")
        for column in runs.columns
        if isinstance(column, str) and column.startswith(AUX_PREFIX) and runs[column].notna().any()
    }


#: the reference of the auxiliary metrics' change column: EW trains every head at weight 1
AUX_REFERENCE = "ew"


def _aux_against_ew(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with, after each ``aux/<task>/<metric>`` column, ``.../vs_ew``: the method's
    mean minus EW's on the same dataset (a difference of rates, AUC or accuracy; NaN where the
    dataset has no EW row or EW has no value). Without auxiliary columns, ``summary`` unchanged."""
    columns = [c for c in summary.columns if str(c).startswith("aux/")]
    if not columns:
        return summary
    ew = summary[summary["method"] == AUX_REFERENCE].set_index("dataset")
    out = summary.copy()
    for c in columns:
        reference = out["dataset"].map(ew[c]) if c in ew else float("nan")
        out.insert(out.columns.get_loc(c) + 1, f"{c}/vs_ew", out[c] - reference)
    return out


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
    runs["run_dir"] = [
        str(run_path(out, spec, d, m, lr, s))
        for d, m, lr, s in zip(runs["dataset"], runs["method"], runs["lr"], runs["seed"])
    ]
    chosen_lr = {(d, m): lr for d, m, lr in lr_choice.itertuples(index=False)}
    per_user = gather_per_user(out, runs, chosen_lr)
    sel = runs.merge(lr_choice, on=["dataset", "method", "lr"])
    tables = {
        "lr_choice": lr_choice,
        **tables_from_runs(sel, spec.pmtrec, per_user=per_user, variants=spec.variants, tuned=spec.tuned),
        "progress": grid_progress(out, spec),
    }
    # every finished run's per-user rows, not only those today's tests read: the strongest baseline
    # can change as runs finish or as its pool is corrected, and run folders' own per-user files
    # are not committed (a few MB for a whole grid)
    with atomic_path(out / PER_USER_FILE) as tmp:
        per_user.to_parquet(tmp, index=False)
    for name, df in tables.items():
        write_text_atomic(out / f"{name}.csv", df.to_csv(index=False))
    write_text_atomic(out / "summary.md", markdown_tables(tables))
    return tables


def grid_baselines(variants: Mapping[str, Mapping[str, Any]] | None = None) -> frozenset[str]:
    """The labels that compete for a grid's strongest baseline: every registered baseline
    (:func:`baseline_methods`) and every ``variants`` label whose ``name`` is one. A baseline's
    grid points are its configurations, chosen among by validation like its learning rate: the
    PMTRec v3 protocol names static-lambda a baseline with its weight chosen on validation from
    {0, 0.03, 0.1, 0.3, 1}, and the v3 grid runs the inner weights as variants ``static0.x``. A
    variant of a PMTRec-family method (``ew-gmb``, ``pmtrec-v2``) is never one, nor is a label
    without a ``variants`` entry."""
    registered = frozenset(baseline_methods())
    of_baselines = {label for label, v in (variants or {}).items() if v.get("name") in registered}
    return registered | of_baselines


def tables_from_runs(
    runs: pd.DataFrame,
    pmtrec: str = "pmtrec",
    is_baseline: Callable[[str], bool] | None = None,
    per_user: pd.DataFrame | None = None,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    tuned: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> dict[str, pd.DataFrame]:
    """The result tables of a set of runs (one row per run; pure: reads per-user files, writes nothing).
    ``tuned``: a tuned grid's configurations (``GridSpec.tuned``), whose parameters the ablation
    table's switches read.

    ``runs`` has columns ``dataset, method, seed, valid_ndcg@20, test_recall@20, test_ndcg@20,
    epochs_run, run_dir`` (``run_dir`` holds ``per_user_test.parquet``) and optionally ``lr``
    (every row of a (dataset, method) at one learning rate); ``per_user`` (see
    :func:`gather_per_user`), when given, replaces the run directories' per-user files;
    ``variants`` (a grid's, label -> ``{name, params}``) says what a variant label runs, for the
    ablation's switches. Returns:

    - ``summary``: per (dataset, method) ``[lr,] seeds, valid_ndcg20, recall20_mean, recall20_std,
      ndcg20_mean, ndcg20_std, epochs[, capped][, coverage20, avgpop20, gini20, tail20]`` (std NaN
      with one seed; ``capped``, when ``runs`` has ``stopped``: the share of the runs that stopped
      at ``max_epochs``; the beyond-accuracy means of ``eval.beyond`` at 20, when runs have them;
      ``aux/<task>/<metric>``, the auxiliary tasks' test means, when runs have them);
    - ``strongest_baseline``: per dataset the baseline (``is_baseline``; default:
      :func:`grid_baselines`, a registered baseline or a ``variants`` label that runs one, such as
      ``static0.1`` running static-lambda at weight 0.1) with the best mean validation NDCG@20;
    - ``significance``: ``pmtrec`` vs that baseline, Wilcoxon over per-user test NDCG@20 averaged
      over seeds (``statistic, p_value, n, n_nonzero, mean_diff`` plus both means);
    - ``significance_groups``: the same test within each user group (activity, social);
    - ``ablation``: per dataset, ``pmtrec``, each of its named configurations and EW that were run,
      with their switches, test NDCG@20, the relative change against ``pmtrec`` and against EW, and
      a Wilcoxon test against ``pmtrec`` over per-user test NDCG@20 (see :func:`ablation_table`).
    """
    if is_baseline is None:
        is_baseline = grid_baselines(variants).__contains__
    summary = _summary(runs)
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
        a = per_user_mean(in_dataset[in_dataset["method"] == pmtrec], per_user)
        b = per_user_mean(in_dataset[in_dataset["method"] == baseline["method"]], per_user)
        merged = paired_users(a, b)
        seeds = part.set_index("method")["seeds"]
        sig_rows.append(
            {
                "dataset": dataset,
                "method": pmtrec,
                "baseline": baseline["method"],
                "pmtrec_seeds": int(seeds[pmtrec]),
                "baseline_seeds": int(seeds[baseline["method"]]),
                # no per-user rows for one side: a row that says so (p NaN, 0 users), not silence
                **(paired_test(merged) if merged is not None else _untested(in_dataset, pmtrec, baseline)),
            }
        )
        if merged is not None:
            group_rows.extend(_group_tests(merged, dataset, baseline["method"]))
    return {
        "summary": summary,
        "strongest_baseline": pd.DataFrame(strongest, columns=["dataset", "baseline", "valid_ndcg20"]),
        "significance": pd.DataFrame(sig_rows),
        "significance_groups": pd.DataFrame(group_rows),
        "ablation": ablation_table(runs, summary, pmtrec, per_user, variants, tuned),
    }


def _summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method), in first-seen order: the seeds, mean validation NDCG@20, test
    recall and NDCG@20 (mean, std), mean epochs, and, where ``runs`` has them, the learning rate,
    the share capped, the beyond-accuracy means and the auxiliary tasks' test means with their
    difference from EW's (``tables_from_runs``'s ``summary``)."""
    aggs = {"lr": ("lr", "first")} if "lr" in runs.columns else {}
    return (
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
            **({"capped": ("stopped", _share_capped)} if "stopped" in runs.columns else {}),
            **_beyond_aggregates(runs),
            **_aux_aggregates(runs),
        )
        .reset_index()
        .pipe(_aux_against_ew)
    )


def _group_tests(merged: pd.DataFrame, dataset: str, baseline: str) -> list[dict[str, Any]]:
    """The paired test of PMTRec against ``baseline`` within each user group (activity, then
    social; groups in ``GROUP_ORDER``) of the paired per-user table ``merged``."""
    rows = []
    for col in ("activity", "social"):
        if f"{col}_a" not in merged:
            continue
        groups = dict(list(merged.groupby(f"{col}_a", observed=True)))
        for level in sorted(groups, key=lambda x: (GROUP_ORDER.get(str(x), len(GROUP_ORDER)), str(x))):
            g = groups[level]
            rows.append(
                {
                    "dataset": dataset,
                    "grouping": col,
                    "group": level,
                    "baseline": baseline,
                    **paired_test(g),
                }
            )
    return rows


ABLATION_COLUMNS = (
    "dataset method weights align schedule rho seeds ndcg20_mean ndcg20_std "
    "rel_vs_pmtrec rel_vs_ew mean_diff p_value"
).split()


#: what the ablation table calls each module switch -> the method parameter that holds it
_SWITCH_PARAMS = {"weights": "weight_mode", "align": "align", "schedule": "schedule", "rho": "rho"}
#: the switches of a method whose parameters hold none of them (EW: uniform, every module off)
_NO_SWITCHES = {"weights": "uniform", "align": False, "schedule": "none", "rho": 0.0}


def method_switches(
    method: str,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    tuned_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PMTRec modules a named configuration turns on (weights, alignment, schedule, GMB
    strength), read off the typed parameters the method runs with (``validate_params``, the one
    resolution) so the table cannot drift from the presets; a method whose parameters hold no
    such switch (EW) reads as uniform weights with every module off. A label in ``variants`` (a
    grid's) reads as the registered method and parameters it runs; ``tuned_params`` (a tuned
    grid's, for this dataset) are merged over them as ``compare --tuned`` runs them."""
    from pmtrec_lab.mtl import validate_params

    variant = (variants or {}).get(method)
    name, params = (variant["name"], variant.get("params") or {}) if variant else (method, {})
    params = {**params, **(tuned_params or {})}
    typed = validate_params(name, params)
    if not all(field in type(typed).model_fields for field in _SWITCH_PARAMS.values()):
        return dict(_NO_SWITCHES)
    return {
        "weights": typed.weight_mode,
        "align": bool(typed.align),
        "schedule": typed.schedule,
        "rho": float(typed.rho),
    }


def ablation_table(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    pmtrec: str = "pmtrec",
    per_user: pd.DataFrame | None = None,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    tuned: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> pd.DataFrame:
    """PMTRec against its own named configurations and EW, per dataset (Yang et al., 2024,
    arXiv 2407.21364, ablate the same three modules).

    Columns: ``dataset, method, weights, align, schedule, rho, seeds, ndcg20_mean, ndcg20_std,
    rel_vs_pmtrec, rel_vs_ew`` (relative change of mean test NDCG@20) and, against ``pmtrec`` over
    per-user test NDCG@20 averaged over seeds, ``mean_diff, p_value`` (NaN for ``pmtrec`` itself).
    ``variants`` (a grid's) lets ``pmtrec`` be a variant label (the tuning grid's ``base``);
    ``tuned`` (a tuned grid's ``GridSpec.tuned``): each dataset's switches are its tuned ones.
    """
    family = [pmtrec, *[m for m in pmtrec_family() if m != pmtrec], "ew"]
    rows = []
    for dataset, part in summary.groupby("dataset", sort=False):
        by_method = part.set_index("method")
        if pmtrec not in by_method.index:
            continue
        ref = by_method.loc[pmtrec, "ndcg20_mean"]
        ew = by_method.loc["ew", "ndcg20_mean"] if "ew" in by_method.index else math.nan
        in_dataset = runs[runs["dataset"] == dataset]
        ref_users = per_user_mean(in_dataset[in_dataset["method"] == pmtrec], per_user)
        for method in family:
            if method not in by_method.index:
                continue
            r = by_method.loc[method]
            test = {"mean_diff": math.nan, "p_value": math.nan}
            if method != pmtrec:
                other = per_user_mean(in_dataset[in_dataset["method"] == method], per_user)
                merged = paired_users(other, ref_users)
                if merged is not None:
                    paired = paired_test(merged)
                    test = {"mean_diff": paired["mean_diff"], "p_value": paired["p_value"]}
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    **method_switches(
                        method, variants, ((tuned or {}).get(dataset, {}).get(method) or {}).get("params")
                    ),
                    "seeds": int(r["seeds"]),
                    "ndcg20_mean": r["ndcg20_mean"],
                    "ndcg20_std": r["ndcg20_std"],
                    "rel_vs_pmtrec": r["ndcg20_mean"] / ref - 1.0,
                    "rel_vs_ew": r["ndcg20_mean"] / ew - 1.0,
                    **test,
                }
            )
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def wide_table(summary: pd.DataFrame, metric: str = "ndcg20") -> str:
    """Markdown: one row per method, one column per dataset, ``mean ± std`` of the test metric
    (x100); the best mean per dataset in bold; ``(n)`` marks cells with fewer seeds than the most
    any method of the table has."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    known = {m: i for i, m in enumerate(method_names())}
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
        failed = prog[prog["failed"].fillna("") != ""] if "failed" in prog.columns else prog.iloc[:0]
        for dataset, part in failed.groupby("dataset", sort=False):
            items = "; ".join(f"{m}: {f}" for m, f in zip(part["method"], part["failed"]))
            parts.append(f"Failed on {dataset}: {items}.")
        parts.append("")
    s = tables.get("summary")
    if s is not None and not s.empty:
        parts.append("### Test NDCG@20 x100 by dataset (mean ± std over seeds; (n): only n seeds so far)\n")
        parts.append(wide_table(s))
        parts.append("")
        parts.append("### Test metrics (mean ± std over seeds, x100; lr chosen on seed-0 validation)\n")
        capped = "capped" in s.columns
        parts.append(
            "| dataset | method | lr | seeds | valid NDCG@20 | Recall@20 | NDCG@20 |"
            + (" at epoch cap |" if capped else "")
        )
        parts.append("| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if capped else ""))
        for _, r in s.iterrows():
            parts.append(
                f"| {r['dataset']} | {r['method']} | {r['lr']:g} | {r['seeds']} | "
                f"{100 * r['valid_ndcg20']:.2f} | "
                f"{_pm(r['recall20_mean'], r['recall20_std'])} | {_pm(r['ndcg20_mean'], r['ndcg20_std'])} |"
                + (f" {round(r['capped'] * r['seeds'])} of {r['seeds']} |" if capped else "")
            )
        parts += _aux_markdown(s) + _beyond_markdown(s)
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


def _untested(runs: pd.DataFrame, pmtrec: str, baseline: pd.Series) -> dict[str, Any]:
    """A significance row's statistics when a side has no per-user rows: both seed-mean test
    NDCG@20 from the runs' metrics, the test's fields NaN and ``n`` 0."""
    mean = runs.groupby("method")["test_ndcg@20"].mean()
    return {
        "pmtrec_ndcg20": float(mean.get(pmtrec, math.nan)),
        "baseline_ndcg20": float(mean.get(baseline["method"], math.nan)),
        "statistic": math.nan,
        "p_value": math.nan,
        "n": 0,
        "n_nonzero": 0,
        "mean_diff": math.nan,
    }


def _share_capped(stopped: pd.Series) -> float:
    """The share of runs that stopped at the epoch cap (``metrics.json`` ``stopped`` equal to
    ``max_epochs``): still improving when the budget ended, so their method may be under-trained
    against methods that converged within it."""
    return float((stopped == "max_epochs").mean())


def _aux_markdown(summary: pd.DataFrame) -> list[str]:
    """The auxiliary tasks' test metrics (``data.aux_holdout``), one table per dataset (its tasks
    differ): x100, each with its change against EW; "-" where the method trains no head for the
    task. Nothing for a grid without them."""
    columns = [c for c in summary.columns if str(c).startswith("aux/") and not str(c).endswith("/vs_ew")]
    if not columns:
        return []
    parts = ["\n### Auxiliary tasks (test, mean over seeds, x100; in brackets: the change against EW)"]
    for dataset, rows in summary.groupby("dataset", sort=False):
        mine = [c for c in columns if rows[c].notna().any()]
        if not mine:
            continue
        parts.append(f"\n{dataset}:\n")
        parts.append("| method | " + " | ".join(c[len("aux/") :] for c in mine) + " |")
        parts.append("| --- |" + " --- |" * len(mine))
        for _, r in rows.iterrows():
            cells = [_aux_cell(r[c], r[f"{c}/vs_ew"]) for c in mine]
            parts.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return parts


def _aux_cell(value: float, change: float) -> str:
    if pd.isna(value):
        return "-"
    return f"{100 * value:.2f}" + ("" if pd.isna(change) else f" ({100 * change:+.2f})")


def _beyond_markdown(summary: pd.DataFrame) -> list[str]:
    """Beyond accuracy at the selected epoch (RecBole's definitions, ``eval/beyond.py``): catalogue
    coverage, average popularity, Gini index and tail share of the test top-20 lists, seed means."""
    names = [n for n in BEYOND_SUMMARY if n in summary.columns]
    if not names:
        return []
    parts = [
        "\n### Beyond accuracy (test top-20 lists, mean over seeds)\n",
        "| dataset | method | " + " | ".join(names) + " |",
        "| --- | --- |" + " --- |" * len(names),
    ]
    for _, r in summary.iterrows():
        cells = ["" if pd.isna(r[n]) else f"{r[n]:.4g}" for n in names]
        parts.append(f"| {r['dataset']} | {r['method']} | " + " | ".join(cells) + " |")
    return parts


def _rel(x: float) -> str:
    return "" if pd.isna(x) else f"{100 * x:+.1f}%"


def _pm(mean: float, std: float) -> str:
    s = 0.0 if std is None or (isinstance(std, float) and np.isnan(std)) else std
    return f"{100 * mean:.2f} ± {100 * s:.2f}"
