"""How far a change of settings moved a grid's numbers: the same runs in two grid folders.

Two grids that differ only in settings outside the methods' parameters (``base``: a default that
changed, a faster code path) name their runs alike (run names hash the method's parameters, the
learning rate and the seed), so their runs pair by (dataset, method, lr, seed). Per (dataset,
method) present in both, one row:

- ``paired_runs`` and ``identical``: runs finished in both, and how many of them report the same
  test NDCG@20 to the last bit; ``records_identical``: how many wrote the same ``metrics.json``
  and ``history.json`` (every ``seconds`` aside), so the same losses at every epoch;
  ``max_abs_diff``: the largest change of one run's test NDCG@20;
- ``lr_before`` / ``lr_after``: the learning rate each grid's seed-0 validation chose;
- ``seeds``, ``test_before`` / ``test_after``: mean test NDCG@20 at that learning rate (what each
  grid's tables report) over the seeds both grids have there (a grid still running is compared on
  its finished seeds), ``diff`` their difference and ``seed_std`` the standard deviation of the
  before grid's seeds (how large a move is against seed noise);
- ``epochs_before`` / ``epochs_after``: mean selected epoch.

Command: ``python -m pmtrec_lab.compare.moved BEFORE_GRID AFTER_GRID`` (markdown on stdout;
``--csv FILE`` also writes the table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pmtrec_lab.compare.layout import choose_lr, grid_runs, run_path
from pmtrec_lab.compare.reproduce import without_seconds

__all__ = ["moved", "markdown"]

TEST = "test_ndcg@20"
KEYS = ["dataset", "method", "lr", "seed"]


def moved(before: Path, after: Path) -> pd.DataFrame:
    """One row per (dataset, method) with finished runs in both grids (module docstring)."""
    before, after = Path(before), Path(after)
    spec_b, runs_b = grid_runs(before)
    spec_a, runs_a = grid_runs(after)
    if runs_b.empty or runs_a.empty:
        return pd.DataFrame()
    paired = runs_b[KEYS + [TEST, "best_epoch"]].merge(
        runs_a[KEYS + [TEST, "best_epoch"]], on=KEYS, suffixes=("_before", "_after")
    )
    rows = []
    for (dataset, method), pairs in paired.groupby(["dataset", "method"], sort=False):
        change = pairs[f"{TEST}_after"] - pairs[f"{TEST}_before"]
        same = [
            _same_records(run_path(before, spec_b, *key), run_path(after, spec_a, *key))
            for key in pairs[KEYS].itertuples(index=False)
        ]
        row = {
            "dataset": dataset,
            "method": method,
            "paired_runs": len(pairs),
            "identical": int((change == 0).sum()),
            "records_identical": sum(same),
            "max_abs_diff": float(change.abs().max()),
        }
        chosen = {}
        for side, folder, spec, runs in (
            ("before", before, spec_b, runs_b),
            ("after", after, spec_a, runs_a),
        ):
            lr = choose_lr(folder, dataset, method, spec)
            row[f"lr_{side}"] = float("nan") if lr is None else lr
            chosen[side] = runs[(runs.dataset == dataset) & (runs.method == method) & (runs.lr == lr)]
        # the seeds both grids have at their chosen rates, so a grid still running is not compared
        # on other seeds than the finished one
        seeds = sorted(set(chosen["before"].seed) & set(chosen["after"].seed))
        row["seeds"] = len(seeds)
        for side, runs in chosen.items():
            runs = runs[runs.seed.isin(seeds)]
            row[f"test_{side}"] = float(runs[TEST].mean()) if len(runs) else float("nan")
            row[f"epochs_{side}"] = float(runs["best_epoch"].mean()) if len(runs) else float("nan")
            if side == "before":
                row["seed_std"] = float(runs[TEST].std()) if len(runs) > 1 else float("nan")
        row["diff"] = row["test_after"] - row["test_before"]
        rows.append(row)
    order = [
        "dataset", "method", "paired_runs", "identical", "records_identical", "max_abs_diff",
        "lr_before", "lr_after", "seeds", "test_before", "test_after", "diff", "seed_std",
        "epochs_before", "epochs_after",
    ]  # fmt: skip
    return pd.DataFrame(rows)[order]


def _same_records(a: Path, b: Path) -> bool:
    """Whether two run folders wrote the same metrics and history, wall times aside."""
    return all(
        without_seconds(json.loads((a / name).read_text()))
        == without_seconds(json.loads((b / name).read_text()))
        for name in ("metrics.json", "history.json")
    )


def _lr(lr: float) -> str:
    return "-" if pd.isna(lr) else f"{lr:g}"


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown, NDCG x100 with two decimals."""
    if table.empty:
        return "(no run finished in both grids)"
    lines = [
        "| dataset | method | runs | test NDCG@20 identical | records identical | lr before / after | "
        "seeds | test NDCG@20 x100 before | after | change | seed std | largest run change |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.dataset} | {r.method} | {r.paired_runs} | {r.identical} | {r.records_identical} | "
            f"{_lr(r.lr_before)} / {_lr(r.lr_after)} | {r.seeds} | "
            f"{100 * r.test_before:.2f} | {100 * r.test_after:.2f} | {100 * r.diff:+.2f} | "
            f"{100 * r.seed_std:.2f} | {100 * r.max_abs_diff:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m pmtrec_lab.compare.moved", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("before", type=Path, help="the grid folder before the change (with grid.resolved.yaml)")
    ap.add_argument("after", type=Path, help="the grid folder after it")
    ap.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    for folder in (args.before, args.after):
        if not (folder / "grid.resolved.yaml").is_file():
            ap.error(f"{folder} is not a grid folder (no grid.resolved.yaml)")
    table = moved(args.before, args.after)
    print(markdown(table))
    if args.csv is not None and not table.empty:
        from pmtrec_lab.paths import write_text_atomic

        write_text_atomic(args.csv, table.to_csv(index=False))


if __name__ == "__main__":
    main()
