"""The v4 study's rule (``docs/pmtrec-method.md``, "PMTRec v4", "Study protocol"; fixed before any
v4 run): one dataset's gain may not hide another's loss.

For each candidate and dataset, the relative change of the mean validation NDCG@20 over the seeds
against the base's. A candidate qualifies when its mean change over the datasets is at least
``GAIN_MIN`` (+0.5 percentage points) and no dataset loses more than ``LOSS_MAX`` (1%). Among the
qualifying candidates, the one with the largest *smallest* per-dataset change wins; candidates
within ``TIE`` (0.25 pp) of that smallest change are tied, and the cheapest of them (mean run
seconds, branches included) wins. v3's rule averaged relative gains, and ml-100k's +44% bought
ciao's -8%; this one cannot.

Only validation metrics are read (``metrics.json``'s ``valid``), never test ones.
``python -m pmtrec_lab.compare.study_rule results/study-v4`` prints the table and writes
``rule.csv`` and ``rule.md`` beside the study's grid folders.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pmtrec_lab.compare.layout import finished_runs
from pmtrec_lab.compare.spec import load_grid

__all__ = ["GAIN_MIN", "LOSS_MAX", "TIE", "judge", "load_study", "main"]

GAIN_MIN = 0.005  # the mean relative change a candidate needs
LOSS_MAX = 0.01  # the largest relative loss on any dataset
TIE = 0.0025  # smallest changes this close are tied; the cheaper candidate wins
METRIC = "ndcg@20"


def load_study(root: Path) -> pd.DataFrame:
    """One row per finished run of every grid ``root/<name>.yaml`` whose folder ``root/<name>``
    exists: dataset, method, seed, validation NDCG@20 and the run's seconds (every epoch, with any
    branches)."""
    rows = []
    for grid in sorted(root.glob("*.yaml")):
        out = root / grid.stem
        if not out.is_dir():
            continue
        spec = load_grid(grid)
        for dataset, method, _lr, seed, rd in finished_runs(out, spec):
            metrics = json.loads((rd / "metrics.json").read_text())
            history = json.loads((rd / "history.json").read_text())
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "seed": seed,
                    "valid": float(metrics["valid"][METRIC]),
                    "seconds": float(sum(r.get("seconds", 0.0) for r in history)),
                }
            )
    return pd.DataFrame(rows, columns=["dataset", "method", "seed", "valid", "seconds"])


def judge(runs: pd.DataFrame, base: str = "pmtrec") -> tuple[pd.DataFrame, str | None]:
    """The rule on ``runs`` (``load_study``'s rows): one row per candidate with its relative change
    per dataset, the mean and smallest change, its mean seconds over the base's, whether it
    qualifies, and the winner (None when no candidate qualifies). Datasets and seeds compared are
    those the base and the candidate both finished; a candidate missing a dataset the base has is
    reported but does not qualify."""
    if base not in set(runs["method"]):
        raise ValueError(f"the base {base!r} has no finished run")
    means = runs.groupby(["method", "dataset"])[["valid", "seconds"]].mean()
    datasets = sorted(means.loc[base].index)
    rows = []
    for method in sorted(set(runs["method"]) - {base}):
        have = means.loc[method]
        row: dict[str, object] = {"candidate": method}
        changes = {}
        for d in datasets:
            if d in have.index:
                changes[d] = have.loc[d, "valid"] / means.loc[(base, d), "valid"] - 1
            row[d] = changes.get(d)
        complete = len(changes) == len(datasets)
        values = list(changes.values())
        row["mean"] = sum(values) / len(values) if values else None
        row["smallest"] = min(values) if values else None
        cost = [have.loc[d, "seconds"] / means.loc[(base, d), "seconds"] for d in changes]
        row["cost"] = sum(cost) / len(cost) if cost else None
        row["qualifies"] = bool(
            complete and row["mean"] >= GAIN_MIN and min(values) >= -LOSS_MAX  # type: ignore[operator]
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=["candidate", *datasets, "mean", "smallest", "cost", "qualifies"])
    ok = table[table["qualifies"]]
    if ok.empty:
        return table, None
    best = ok["smallest"].max()
    tied = ok[ok["smallest"] >= best - TIE]
    return table, str(tied.sort_values(["cost", "candidate"]).iloc[0]["candidate"])


def _markdown(table: pd.DataFrame, winner: str | None, base: str) -> str:
    def pct(x: object) -> str:
        return "-" if x is None or pd.isna(x) else f"{100 * float(x):+.2f}%"

    cols = [c for c in table.columns if c not in ("candidate", "qualifies", "cost")]
    lines = [
        f"Relative change of mean validation NDCG@20 against `{base}` (rule: mean >= "
        f"+{100 * GAIN_MIN:g}%, no dataset below -{100 * LOSS_MAX:g}%; largest smallest change wins, "
        f"ties within {100 * TIE:g} pp to the cheaper)",
        "",
        "| candidate | " + " | ".join(cols) + " | cost (x base seconds) | qualifies |",
        "| --- | " + " | ".join("---" for _ in cols) + " | --- | --- |",
    ]
    for _, r in table.iterrows():
        cells = [pct(r[c]) for c in cols]
        cost = "-" if pd.isna(r["cost"]) else f"{r['cost']:.2f}"
        lines.append(
            f"| {r['candidate']} | "
            + " | ".join(cells)
            + f" | {cost} | {'yes' if r['qualifies'] else 'no'} |"
        )
    lines += ["", f"Chosen: **{winner}**" if winner else "Chosen: none qualifies (the base stays)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pmtrec_lab.compare.study_rule", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "root", type=Path, help="the study folder: grids <name>.yaml beside their folders <name>/"
    )
    parser.add_argument("--base", default="pmtrec", help="the grid label every candidate is compared with")
    args = parser.parse_args(argv)
    runs = load_study(args.root)
    if runs.empty:
        parser.error(f"{args.root}: no finished run of any grid <name>.yaml in its folder <name>/")
    table, winner = judge(runs, args.base)
    text = _markdown(table, winner, args.base)
    table.to_csv(args.root / "rule.csv", index=False)
    (args.root / "rule.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
