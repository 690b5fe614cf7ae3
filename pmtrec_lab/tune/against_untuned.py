"""Tuned against untuned: what an equal-budget search (``pmtrec-lab tune``, then
``compare --tuned``) bought each method over the comparison grid's two-learning-rate choice.

Per (dataset, method) of the tuned grid, one row:

- ``untuned``: the untuned grid's configuration that validation chose (the method at its chosen
  learning rate; for ``static-lambda``, the best of the grid's ``static-lambda`` variants, each at
  its seed-0-chosen learning rate, by mean validation NDCG@20 over seeds: the rule by which the
  grid's strongest baseline is chosen; single-task and EW, the weights 0 and 1, compete as
  methods of their own), its seed-0 validation NDCG@20 (what chose the learning rate), its mean
  validation over seeds (``untuned_valid_mean``, what chose among variants) and its test NDCG@20
  over the seeds;
- ``tuned``: the study's best trial score (best validation NDCG@20 at any epoch), the tuned
  grid's seed-0 validation NDCG@20 (the same configuration and seed retrained: equal to the
  trial's score when training is deterministic, a check), and its test NDCG@20 over the seeds;
- ``cut_by_asha``: trials that ASHA stopped within ``short`` epochs (what the search did not see
  past its first rungs).

Test numbers are reported, never used to choose. Command:
``python -m pmtrec_lab.tune.against_untuned TUNED_GRID UNTUNED_GRID``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pmtrec_lab.compare.layout import grid_runs
from pmtrec_lab.compare.spec import method_of
from pmtrec_lab.tune.output import grid_trials

__all__ = ["tuned_against_untuned", "markdown"]

VALID = "valid_ndcg@20"
TEST = "test_ndcg@20"


def _untuned_candidates(spec, method: str) -> list[str]:
    """The untuned grid's methods that stand for ``method``: itself, or for static-lambda its fixed
    weights (the grid's ``static-lambda`` variants; single-task and EW, the weights 0 and 1, are
    candidates of their own, as in the strongest-baseline pool)."""
    if method != "static-lambda":
        return [method] if method in spec.methods else []
    return [m for m in spec.methods if method_of(spec, m)[0] == "static-lambda"]


def _untuned_choice(runs: pd.DataFrame, candidates: list[str]) -> tuple[str, float, float, float] | None:
    """(method, lr, seed-0 validation, mean validation over seeds) of the untuned grid's choice
    among ``candidates``: each at the learning rate its seed-0 validation chose, then the best by
    mean validation NDCG@20 over its seeds (the comparison's strongest-baseline rule)."""
    chosen = []
    for method in candidates:
        seed0 = runs[(runs["seed"] == 0) & (runs["method"] == method)]
        if seed0.empty:
            continue
        best = seed0.loc[seed0[VALID].idxmax()]
        at_lr = runs[(runs["method"] == method) & (runs["lr"] == best["lr"])]
        chosen.append((method, float(best["lr"]), float(best[VALID]), float(at_lr[VALID].mean())))
    return max(chosen, key=lambda c: c[3]) if chosen else None


def _test(runs: pd.DataFrame, method: str, lr: float) -> pd.Series:
    sel = runs[(runs["method"] == method) & (runs["lr"] == lr)]
    return sel[TEST].astype(float)


def tuned_against_untuned(tuned_grid: Path, untuned_grid: Path, short: int = 2) -> pd.DataFrame:
    """The table described in the module docstring (NDCG@20 in percent)."""
    tuned_spec, tuned_runs = grid_runs(Path(tuned_grid))
    untuned_spec, untuned_runs = grid_runs(Path(untuned_grid))
    trials = grid_trials(Path(tuned_grid))
    rows = []
    for dataset in tuned_spec.datasets:
        for method in tuned_spec.methods:
            row: dict = {"dataset": dataset, "method": method}
            u_runs = untuned_runs[untuned_runs["dataset"] == dataset]
            choice = _untuned_choice(u_runs, _untuned_candidates(untuned_spec, method))
            if choice is not None:
                u_method, u_lr, u_valid, u_valid_mean = choice
                u_test = _test(u_runs, u_method, u_lr)
                row.update(
                    untuned=f"{u_method} lr {u_lr:g}",
                    untuned_valid=100 * u_valid,
                    untuned_valid_mean=100 * u_valid_mean,
                    untuned_test=100 * u_test.mean(),
                    untuned_test_std=100 * u_test.std(ddof=1) if len(u_test) > 1 else float("nan"),
                    untuned_seeds=len(u_test),
                )
            t = (
                trials[(trials["dataset"] == dataset) & (trials["method"] == method)]
                if len(trials)
                else trials
            )
            if len(t):
                row.update(
                    trials=len(t),
                    cut_by_asha=int(((t["stopped_early"].astype(bool)) & (t["epochs_run"] <= short)).sum()),
                    best_trial_valid=100 * float(t["best_valid_ndcg@20"].max()),
                )
            t_runs = tuned_runs[(tuned_runs["dataset"] == dataset) & (tuned_runs["method"] == method)]
            if len(t_runs):
                seed0 = t_runs[t_runs["seed"] == 0]
                row.update(
                    tuned_valid=100 * float(seed0[VALID].iloc[0]) if len(seed0) else float("nan"),
                    tuned_test=100 * t_runs[TEST].astype(float).mean(),
                    tuned_test_std=100 * t_runs[TEST].astype(float).std(ddof=1)
                    if len(t_runs) > 1
                    else float("nan"),
                    tuned_seeds=len(t_runs),
                )
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, NDCG@20 in percent with two decimals."""
    lines = [
        "| dataset | method | untuned choice | untuned valid | best trial valid | tuned valid (seed 0) "
        "| untuned test | tuned test | trials cut at <= 2 epochs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def num(row, key: str) -> str:
        value = row.get(key)
        return "-" if value is None or pd.isna(value) else f"{value:.2f}"

    def pm(row, key: str) -> str:
        if pd.isna(row.get(key, float("nan"))):
            return "-"
        return f"{row[key]:.2f} ± {row[key + '_std']:.2f} ({int(row[key.replace('test', 'seeds')])})"

    for _, row in table.iterrows():
        cut = (
            "-"
            if pd.isna(row.get("trials", float("nan")))
            else f"{int(row['cut_by_asha'])} of {int(row['trials'])}"
        )
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row.get('untuned', '-')} | {num(row, 'untuned_valid')} "
            f"| {num(row, 'best_trial_valid')} | {num(row, 'tuned_valid')} | {pm(row, 'untuned_test')} "
            f"| {pm(row, 'tuned_test')} | {cut} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tuned_grid", type=Path, help="a grid folder run with compare --tuned")
    parser.add_argument("untuned_grid", type=Path, help="the untuned comparison grid's folder")
    args = parser.parse_args(argv)
    print(markdown(tuned_against_untuned(args.tuned_grid, args.untuned_grid)), end="")


if __name__ == "__main__":
    main()
