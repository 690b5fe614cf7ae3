"""Epoch time against data size, and the sampling share of an epoch.

- MF + EW epoch time on synthetic data from 10k to 1M interactions (target: linear), with the
  share of the epoch spent sampling (target: at most 15%);
- with ``--sparse``, the same MF epochs with ``optim.sparse`` (SparseAdam on the tables, Adam on
  the heads) right after the dense ones on the same data, so their ratio is measured together;
- LightGCN / hetero step time against the number of training edges (``--graph-sizes ""``: skip).
Prints per size: interactions, seconds per epoch, seconds per 100k interactions (flat = linear),
sampling share. Ratios are measured within one run.

    .venv/bin/python benchmarks/epoch_scaling.py [--sizes 10000,100000,1000000] [--sparse] [--graph-sizes ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from pmtrec_lab.config import DEFAULT_DIM, DEFAULT_LR, load_config
from pmtrec_lab.data.loading import build_rec_dataset
from pmtrec_lab.data.sources.synthetic import load_raw
from pmtrec_lab.mtl import StepContext, make_method
from pmtrec_lab.train import build_model
from pmtrec_lab.train.optim import make_optimizer
from pmtrec_lab.train.step import train_step


def synthetic(interactions: int):
    users = max(100, interactions // 20)
    raw = load_raw(None, num_users=users, num_items=max(50, users // 2), interactions_per_user=20, seed=0)
    return build_rec_dataset(raw, k=2, rating_threshold=None, split_seed=0)


def epoch_time(
    ds, encoder: str, max_steps: int | None = None, sparse: bool = False
) -> tuple[float, float, int, int]:
    cfg = load_config(
        base={
            "data": {"name": "synthetic"},
            "encoder": {"name": encoder, "dim": DEFAULT_DIM, "num_layers": 3},
            "tasks": {"include": ["social:friends", "item_label:category"]},
            "optim": {"lr": DEFAULT_LR, "sparse": sparse},
        }
    )
    model = build_model(cfg, ds)
    tasks = list(model.tasks)
    opt = make_optimizer(cfg, model)  # Adam over everything, or SparseAdam (tables) + Adam (heads)
    method = make_method("ew", len(tasks))
    gen = torch.Generator().manual_seed(0)
    steps = tasks[0].steps_for_epoch()
    for t in tasks:
        t.start_epoch(steps, gen)
    n = steps if max_steps is None else min(steps, max_steps)
    sampling = 0.0
    t0 = time.perf_counter()
    for i in range(n):
        s0 = time.perf_counter()
        batches = [t.next_batch(gen) for t in tasks]
        sampling += time.perf_counter() - s0
        ctx = StepContext(i, 0, steps, [t.name for t in tasks], gen)
        opt.zero_grad(set_to_none=True)
        train_step(model.encoder, tasks, batches, method, ctx, 1e-4, torch.device("cpu"))
        opt.step()
    total = time.perf_counter() - t0
    return total * steps / n, sampling / total, steps, len(ds.split.train)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--graph-sizes", default="20000,80000,320000")
    ap.add_argument("--graph-steps", type=int, default=8)
    ap.add_argument(
        "--sparse", action="store_true", help="also time MF with optim.sparse, after each dense epoch"
    )
    args = ap.parse_args()
    print(f"threads={torch.get_num_threads()}")
    print("MF + EW, full epochs (rec + social + category)")
    print(
        f"{'interactions':>13}{'train pairs':>13}{'steps':>7}{'optimizer':>11}{'s/epoch':>10}"
        f"{'s per 100k':>12}{'sampling':>10}"
    )
    for size in (int(s) for s in args.sizes.split(",") if s):
        ds = synthetic(size)
        for sparse in (False, True) if args.sparse else (False,):
            sec, share, steps, n_train = epoch_time(ds, "mf", sparse=sparse)
            print(
                f"{len(ds.interactions):>13,}{n_train:>13,}{steps:>7}{'sparse' if sparse else 'dense':>11}"
                f"{sec:>10.2f}{sec / n_train * 1e5:>12.3f}{100 * share:>9.1f}%",
                flush=True,
            )
    graph_sizes = [int(s) for s in args.graph_sizes.split(",") if s]
    for enc in ("lightgcn", "hetero") if graph_sizes else ():
        print(f"\n{enc}: step time against training edges ({args.graph_steps} steps, extrapolated per epoch)")
        print(f"{'train edges':>13}{'ms/step':>10}{'ms/step per 100k edges':>24}")
        for size in graph_sizes:
            ds = synthetic(size)
            sec, _, steps, n_train = epoch_time(ds, enc, max_steps=args.graph_steps)
            ms = sec / steps * 1e3
            print(f"{n_train:>13,}{ms:>10.1f}{ms / n_train * 1e5:>24.1f}")


if __name__ == "__main__":
    main()
