"""How much of PMTRec's norm signal is batch frequency (PMTRec v3, item 1).

Task losses are batch means, so an entity's per-row gradient g_x^k sums over its occurrences in
task k's batch and its norm n_x^k grows with the occurrence count c_x^k. This script trains MF
with equal weights (Adam, the config's learning rate) and, at chosen steps, measures the
Spearman correlation between each candidate signal and c_x^k:

- ``raw``: n_x^k (PMTRec v2),
- ``sqrt_count``: n_x^k / sqrt(c_x^k),
- ``count``: n_x^k / c_x^k (a lower bound of the mean per-occurrence norm).
- ``fitted``: n_x^k / (c_x^k)^a, a = the batch's least-squares slope of log n on log c, clipped
  to [0, 2] (PMTRec v3 keeps a moving average of it per task and side: ``norm_mode="fitted"``).

Only (task, side) pairs whose counts vary are measured, and the correlation is computed within
deciles of the entity's expected count in that task (its occurrences over one independently
sampled epoch: its activity there) and averaged over deciles weighted by their size, so that a
real activity effect is not counted against the signal: what remains is sampling luck.
Target for a frequency-free signal: |rho| < 0.1.

    .venv/bin/python benchmarks/norm_frequency.py [--datasets ciao,lastfm] [--at 0,1,2,200,400]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from pmtrec_lab.config import DEFAULT_DIM, load_config
from pmtrec_lab.data import load_dataset
from pmtrec_lab.mtl import StepContext, make_method
from pmtrec_lab.train import build_model
from pmtrec_lab.train.step import layout_step, train_step

SIGNALS = ("raw", "sqrt_count", "count", "fitted")


def degree_deciles(degree: np.ndarray) -> np.ndarray:
    """Decile index (0..9) of each entity's training degree (ties share a decile)."""
    edges = np.unique(np.quantile(degree, np.linspace(0, 1, 11)[1:-1]))
    return np.searchsorted(edges, degree, side="right")


def within_decile_spearman(signal: np.ndarray, count: np.ndarray, decile: np.ndarray) -> float:
    """Size-weighted mean over deciles of Spearman(signal, count); deciles with constant counts
    (or fewer than 10 entities) are skipped. NaN when none qualifies."""
    total, weight = 0.0, 0  # a loop over ten deciles, not over entities
    for d in np.unique(decile):
        sel = decile == d
        if sel.sum() < 10 or np.ptp(count[sel]) == 0:
            continue
        rho = spearmanr(signal[sel], count[sel]).statistic
        if np.isfinite(rho):
            total += rho * sel.sum()
            weight += int(sel.sum())
    return total / weight if weight else float("nan")


def expected_count_deciles(tasks, steps: int, sizes: tuple[int, int], device) -> list[list[np.ndarray]]:
    """Per task and side, the decile of each entity's occurrences over one sampled epoch (its
    expected count: what its activity in that task predicts), from an independent generator."""
    gen = torch.Generator().manual_seed(12345)
    for t in tasks:
        t.start_epoch(steps, gen)
    total = [[np.zeros(n) for n in sizes] for _ in tasks]
    for _ in range(steps):
        lay = layout_step([t.next_batch(gen) for t in tasks], device)
        counts, side, ids = lay.counts.T.numpy(), lay.side.numpy(), lay.entity_ids.numpy()
        for k in range(len(tasks)):
            for s in (0, 1):
                sel = side == s
                np.add.at(total[k][s], ids[sel], counts[k][sel])
    return [[degree_deciles(c) for c in per_side] for per_side in total]


def measure(dataset: str, data_dir: str | None, at: list[int], lr: float) -> list[dict]:
    cfg = load_config(
        base={"data": {"name": dataset, "data_dir": data_dir}, "encoder": {"name": "mf", "dim": DEFAULT_DIM}}
    )
    ds = load_dataset(cfg.data.name, cfg.data.data_dir)
    model = build_model(cfg, ds)
    tasks = list(model.tasks)
    names = [t.name for t in tasks]
    steps = tasks[0].steps_for_epoch()
    cpu = torch.device("cpu")
    deciles = expected_count_deciles(tasks, steps, (ds.num_users, ds.num_items), cpu)
    method = make_method("ew", len(tasks))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []
    for step in range(max(at) + 1):
        if step % steps == 0:
            for t in tasks:
                t.start_epoch(steps, gen)
        batches = [t.next_batch(gen) for t in tasks]
        ctx = StepContext(step, step // steps, steps, names, torch.Generator().manual_seed(step))
        opt.zero_grad(set_to_none=True)
        res = train_step(model.encoder, tasks, batches, method, ctx, cfg.optim.l2, cpu)
        opt.step()
        if step not in at:
            continue
        norms = res.grads.norm(dim=2).numpy()  # [K, E]
        counts = res.layout.counts.T.numpy()  # [K, E]
        side = res.layout.side.numpy()
        ids = res.layout.entity_ids.numpy()
        for k, name in enumerate(names):
            for s, side_name in ((0, "user"), (1, "item")):
                sel = (counts[k] > 0) & (side == s)
                if sel.sum() < 20 or np.ptp(counts[k][sel]) == 0:
                    continue
                c, n = counts[k][sel], norms[k][sel]
                dec = deciles[k][s][ids[sel]]
                a = float(np.clip(np.polyfit(np.log(c), np.log(np.maximum(n, 1e-30)), 1)[0], 0, 2))
                signals = {"raw": n, "sqrt_count": n / np.sqrt(c), "count": n / c, "fitted": n / c**a}
                row = {"dataset": dataset, "step": step, "task": name, "side": side_name, "n": int(sel.sum())}
                row.update({sig: within_decile_spearman(v, c, dec) for sig, v in signals.items()})
                rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="ciao,lastfm")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--at", default="0,1,2,200,400", help="steps at which to measure")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    at = sorted({int(s) for s in args.at.split(",")})
    print("Spearman(signal, in-batch count) within expected-count deciles; target |rho| < 0.1")
    header = " ".join(f"{s:>10}" for s in SIGNALS)
    print(f"{'dataset':<8} {'step':>5} {'task':<24} {'side':<5} {'n':>6} {header}")
    for dataset in args.datasets.split(","):
        for r in measure(dataset, args.data_dir, at, args.lr):
            vals = " ".join(f"{r[s]:+10.3f}" for s in SIGNALS)
            where = f"{r['dataset']:<8} {r['step']:>5} {r['task']:<24} {r['side']:<5} {r['n']:>6}"
            print(f"{where} {vals}", flush=True)


if __name__ == "__main__":
    main()
