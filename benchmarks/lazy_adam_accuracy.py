"""Does lazy Adam change accuracy? Its EW runs (``results/lazy-adam/``) against the dense-Adam EW
runs of the comparison grid (``results/grid/``), same settings and seeds.

Per (dataset, seed): validation NDCG@20 at the validation-selected epoch (what the grid selects
on), test NDCG@20 beside it, the best epoch and seconds per epoch. Then per dataset and over both:
the mean difference lazy - dense and a paired test over the (dataset, seed) pairs (paired t-test,
``scipy.stats.ttest_rel``, and Wilcoxon signed-rank where there are enough pairs). Writes
``OUT/accuracy.csv`` and ``OUT/accuracy.md`` and prints the table.

    .venv/bin/python benchmarks/lazy_adam_accuracy.py [--lazy results/lazy-adam] [--dense results/grid]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent


def runs(root: Path, method: str = "ew", lr: str = "0.001") -> pd.DataFrame:
    """One row per finished run under ``root/runs/<dataset>/<method>/lr<lr>-seed<seed>[-hash]``."""
    rows = []
    for metrics in sorted((root / "runs").glob(f"*/{method}/lr{lr}-seed*/metrics.json")):
        folder = metrics.parent
        seed = int(folder.name.split("seed")[1].split("-")[0])
        m = json.loads(metrics.read_text())
        history = json.loads((folder / "history.json").read_text())
        rows.append({
            "dataset": folder.parent.parent.name,
            "seed": seed,
            "valid": m["valid"]["ndcg@20"],
            "test": m["test"]["ndcg@20"],
            "best_epoch": m["best_epoch"],
            "epochs": len(history),
            "s_per_epoch": float(np.median([h["seconds"] for h in history])),
        })
    return pd.DataFrame(rows)


def paired(lazy: np.ndarray, dense: np.ndarray) -> dict[str, float]:
    diff = lazy - dense
    out = {"n": len(diff), "mean_diff": float(diff.mean()), "rel_diff": float(diff.mean() / dense.mean())}
    out["t_p"] = float(stats.ttest_rel(lazy, dense).pvalue) if len(diff) > 1 else float("nan")
    out["wilcoxon_p"] = float(stats.wilcoxon(lazy, dense).pvalue) if len(diff) >= 5 else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lazy", default=str(ROOT / "results" / "lazy-adam"))
    ap.add_argument("--dense", default=str(ROOT / "results" / "grid"))
    ap.add_argument("--out", default=None, help="where accuracy.csv/.md go (default: --lazy)")
    args = ap.parse_args()
    lazy, dense = runs(Path(args.lazy)), runs(Path(args.dense))
    both = lazy.merge(dense, on=["dataset", "seed"], suffixes=("_lazy", "_dense"))
    both = both[both["dataset"].isin(lazy["dataset"].unique())].sort_values(["dataset", "seed"])
    if both.empty:
        raise SystemExit("no (dataset, seed) pair has both a lazy and a dense run")
    out = Path(args.out or args.lazy)
    both.to_csv(out / "accuracy.csv", index=False)
    lines = [
        "| dataset | seed | valid NDCG@20 dense | lazy | diff | test NDCG@20 dense | lazy "
        "| best epoch dense / lazy | s/epoch dense / lazy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in both.itertuples():
        lines.append(
            f"| {r.dataset} | {r.seed} | {r.valid_dense:.4f} | {r.valid_lazy:.4f} "
            f"| {r.valid_lazy - r.valid_dense:+.4f} | {r.test_dense:.4f} | {r.test_lazy:.4f} "
            f"| {r.best_epoch_dense} / {r.best_epoch_lazy} "
            f"| {r.s_per_epoch_dense:.1f} / {r.s_per_epoch_lazy:.1f} |"
        )
    lines += [
        "",
        "| scope | pairs | valid NDCG@20 mean diff (lazy - dense) | relative | paired t p | Wilcoxon p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    groups = [(ds, g) for ds, g in both.groupby("dataset")] + [("both", both)]
    for name, g in groups:
        s = paired(g["valid_lazy"].to_numpy(), g["valid_dense"].to_numpy())
        wil = "n/a (< 5 pairs)" if np.isnan(s["wilcoxon_p"]) else f"{s['wilcoxon_p']:.3f}"
        lines.append(
            f"| {name} | {s['n']} | {s['mean_diff']:+.4f} | {100 * s['rel_diff']:+.1f}% "
            f"| {s['t_p']:.3f} | {wil} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
