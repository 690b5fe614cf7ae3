"""PMTRec v3's pre-registered hypotheses H1-H3, judged from a grid's tables
(``docs/pmtrec-method.md``, "Hypotheses"; written before the v3 grid's test metrics were read).

- **H1**: ``pmtrec``'s mean test NDCG@20 is at least the strongest baseline's on every dataset
  (the baseline with the best validation NDCG@20, ``strongest_baseline.csv``), and ahead with a
  two-sided Wilcoxon p < 0.05 over users (``significance.csv``) on at least two datasets.
- **H2**: ``pmtrec``'s mean test NDCG@20 is never more than 2% below single-task training's.
- **H3**: per-entity weights beat shared ones (``pmtrec`` against ``pmtrec-no-personalization``)
  and the learned deviations beat the permuted control (``pmtrec-delta`` against
  ``pmtrec-delta-permuted``), each ahead with p < 0.05 on at least two datasets. Paired over
  users, each user's test NDCG@20 averaged over the seeds (as the significance tables do).

A dataset where a needed method has not finished all its runs (``progress.csv``) reads as
undecided (``None``); for H1 that is every method of the dataset, since the strongest baseline
is chosen among all of them. A tuned grid (``compare --tuned``) has no single-task runs (the study tunes
the multi-task methods only): ``single_task_from`` names the grid whose single-task runs H2 uses
then (the untuned v3 grid, its learning rate chosen on validation among two), and the evidence
says which grid each single-task figure came from; H3's controls are not part of a tuned grid,
so there H3 reads as undecided. Verdicts
combine as three-valued logic: one failing dataset fails a hypothesis that needs all of them;
otherwise it stays undecided while a dataset it needs is. Run
``python -m pmtrec_lab.compare.hypotheses results/grid-v3`` to print both tables.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd

from pmtrec_lab.compare.layout import PER_USER_FILE, load_results
from pmtrec_lab.eval.significance import wilcoxon_paired

__all__ = ["ALPHA", "H2_TOLERANCE", "H3_PAIRS", "judge", "main"]

ALPHA = 0.05
#: H2: the largest allowed shortfall against single-task, as a fraction
H2_TOLERANCE = 0.02
#: H3's comparisons: (the personalized method, its control)
H3_PAIRS: tuple[tuple[str, str], ...] = (
    ("pmtrec", "pmtrec-no-personalization"),
    ("pmtrec-delta", "pmtrec-delta-permuted"),
)
METRIC = "ndcg@20"


def _complete(progress: pd.DataFrame | None, dataset: str, methods: list[str] | None) -> bool:
    """True when every run of ``methods`` (None: every method of the dataset) on ``dataset`` has
    finished, by the grid's ``progress.csv``. Without a progress table the tables are taken as
    final. A partial grid's tables hold what has finished (a strongest baseline among the
    baselines done so far, a method with one seed), which must not decide a hypothesis."""
    if progress is None:
        return True
    part = progress[progress["dataset"] == dataset]
    if methods is not None:
        part = part[part["method"].isin(methods)]
        if set(part["method"]) != set(methods):
            return False
    return bool(len(part)) and bool((part["done"] == part["planned"]).all())


def _mean_test(summary: pd.DataFrame, dataset: str, method: str) -> float:
    """Mean test NDCG@20 over seeds of ``method`` on ``dataset`` (NaN when not in the summary)."""
    row = summary[(summary["dataset"] == dataset) & (summary["method"] == method)]
    return float(row["ndcg20_mean"].iloc[0]) if len(row) else math.nan


def _paired(per_user: pd.DataFrame, dataset: str, a: str, b: str) -> dict[str, Any] | None:
    """Wilcoxon of a against b over users (seed-mean per user); None if either is missing."""
    part = per_user[per_user["dataset"] == dataset]
    means = [part[part["method"] == m].groupby("user")[METRIC].mean() for m in (a, b)]
    if any(m.empty for m in means):
        return None
    joined = pd.concat(means, axis=1, keys=["a", "b"], join="inner")
    return wilcoxon_paired(joined["a"].to_numpy(), joined["b"].to_numpy())


def _ahead(test: dict[str, Any] | None) -> bool | None:
    """Ahead: a positive mean difference with p < ALPHA (None when the test could not run)."""
    return None if test is None else bool(test["mean_diff"] > 0 and test["p_value"] < ALPHA)


def _all(values: list[bool | None]) -> bool | None:
    """Three-valued AND: False if any is False, else None if any is undecided, else True."""
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _at_least(values: list[bool | None], k: int) -> bool | None:
    """True once k are True; False once even the undecided ones could not reach k; else None."""
    yes = sum(v is True for v in values)
    open_ = sum(v is None for v in values)
    return True if yes >= k else (None if yes + open_ >= k else False)


def _datasets(out: Path, summary: pd.DataFrame) -> list[str]:
    """The grid's datasets (``grid.resolved.yaml``; a dataset not started yet is undecided, not
    absent), else those in the summary."""
    import yaml

    resolved = out / "grid.resolved.yaml"
    listed = (yaml.safe_load(resolved.read_text()) or {}).get("datasets") if resolved.is_file() else None
    return list(dict.fromkeys([*(listed or []), *summary["dataset"]]))


def _single_task_reference(
    other: Path | None,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The summary and progress tables of the grid that supplies single-task (None: none)."""
    if other is None:
        return None, None
    tables = load_results(Path(other))
    if "summary" not in tables:
        raise FileNotFoundError(f"{other}: no summary.csv (the grid for --single-task-from)")
    return tables["summary"], _progress(Path(other))


def _progress(grid: Path) -> pd.DataFrame | None:
    """A grid's ``progress.csv`` (None without one: its tables are taken as final)."""
    path = grid / "progress.csv"
    return pd.read_csv(path) if path.is_file() else None


def judge(
    out: str | Path, pmtrec: str = "pmtrec", single_task_from: str | Path | None = None
) -> tuple[pd.DataFrame, dict[str, bool | None]]:
    """Per-dataset evidence and the verdicts ``{"H1", "H2", "H3"}`` of the grid in ``out``
    (``single_task_from``: the grid whose single-task runs H2 uses where ``out`` has none)."""
    out = Path(out)
    ref_summary, ref_progress = _single_task_reference(
        None if single_task_from is None else Path(single_task_from)
    )
    tables = load_results(out)
    summary = tables.get("summary", pd.DataFrame(columns=["dataset", "method", "ndcg20_mean"]))
    strongest = tables.get("strongest_baseline", pd.DataFrame(columns=["dataset", "baseline"]))
    significance = tables.get("significance", pd.DataFrame(columns=["dataset", "method", "p_value"]))
    per_user_file = out / PER_USER_FILE
    per_user = (
        pd.read_parquet(per_user_file)
        if per_user_file.is_file()
        else pd.DataFrame(columns=["dataset", "method", "seed", "user", METRIC])
    )
    lr_choice = tables.get("lr_choice")
    if "lr" in per_user.columns and lr_choice is not None:  # a grid keeps every run's rows
        per_user = per_user.merge(lr_choice[["dataset", "method", "lr"]], on=["dataset", "method", "lr"])
    progress = _progress(out)
    rows = []
    for dataset in _datasets(out, summary):
        h1_ready = _complete(progress, dataset, None)  # the strongest baseline among all of them
        h2_ready = _complete(progress, dataset, [pmtrec, "single-task"])
        p = _mean_test(summary, dataset, pmtrec)
        single = _mean_test(summary, dataset, "single-task")
        single_source = str(out)
        planned_here = progress is not None and bool(
            ((progress["dataset"] == dataset) & (progress["method"] == "single-task")).any()
        )
        if math.isnan(single) and ref_summary is not None and not planned_here:
            single = _mean_test(ref_summary, dataset, "single-task")
            single_source = str(single_task_from)
            h2_ready = _complete(progress, dataset, [pmtrec]) and _complete(
                ref_progress, dataset, ["single-task"]
            )
        base = strongest[strongest["dataset"] == dataset]
        baseline = str(base["baseline"].iloc[0]) if len(base) else None
        b = _mean_test(summary, dataset, baseline) if baseline else math.nan
        sig = significance[(significance["dataset"] == dataset) & (significance["method"] == pmtrec)]
        p_value = float(sig["p_value"].iloc[0]) if len(sig) else math.nan
        row: dict[str, Any] = {
            "dataset": dataset,
            "pmtrec": p,
            "strongest_baseline": baseline,
            "baseline": b,
            "h1_not_below": None if not h1_ready or math.isnan(p) or math.isnan(b) else bool(p >= b),
            "h1_p_value": p_value,
            "h1_ahead": None
            if not h1_ready or math.isnan(p_value) or math.isnan(p) or math.isnan(b)
            else bool(p > b and p_value < ALPHA),
            "single_task": single,
            "single_task_from": single_source if not math.isnan(single) else None,
            "vs_single_task": p / single - 1 if single > 0 else math.nan,
        }
        vs = row["vs_single_task"]
        row["h2_holds"] = None if not h2_ready or math.isnan(vs) else bool(vs >= -H2_TOLERANCE)
        for a, c in H3_PAIRS:
            test = _paired(per_user, dataset, a, c) if _complete(progress, dataset, [a, c]) else None
            row[f"{a} vs {c}: diff"] = math.nan if test is None else test["mean_diff"]
            row[f"{a} vs {c}: p"] = math.nan if test is None else test["p_value"]
            row[f"{a} vs {c}: ahead"] = _ahead(test)
        rows.append(row)
    evidence = pd.DataFrame(rows)
    if evidence.empty:
        return evidence, {"H1": None, "H2": None, "H3": None}
    h1 = _all([_all(list(evidence["h1_not_below"])), _at_least(list(evidence["h1_ahead"]), 2)])
    h3 = _all([_at_least(list(evidence[f"{a} vs {c}: ahead"]), 2) for a, c in H3_PAIRS])
    return evidence, {"H1": h1, "H2": _all(list(evidence["h2_holds"])), "H3": h3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="a grid's output folder (its tables), e.g. results/grid-v3")
    ap.add_argument(
        "--single-task-from",
        default=None,
        metavar="GRID",
        help="the grid whose single-task runs H2 uses where OUT has none (a tuned grid: results/grid-v3)",
    )
    args = ap.parse_args(argv)
    evidence, verdicts = judge(args.out, single_task_from=args.single_task_from)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(evidence.to_string(index=False))
    print({k: ("undecided" if v is None else ("holds" if v else "fails")) for k, v in verdicts.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
