"""Training time against data size: MF + EW from 100k to 10M interactions, per optimizer.

For each size, a child process (so that each size's peak memory is its own) generates synthetic
data (``pmtrec_lab.data.sources.synthetic``: 20 interactions per user, half as many items as
users, rec + social + category tasks) and, for each optimizer, times a fixed number of training
steps after a few warm-up steps (an epoch at 10M takes too long): dense Adam (``adam``, the
default), torch's SparseAdam (``sparse``, ``optim.sparse``) and the per-row lazy Adam
(``lazy_adam``, ``optim.optimizer=lazy_adam``). The epoch time is the measured step time times
the epoch's steps, so **seconds per 100k training pairs** is flat when training is linear in the
data. Also printed: the sampling share of a step and the child's peak resident memory (VmHWM).
The graph encoders' step time against training edges follows (``--graph-sizes ""``: skip).

    .venv/bin/python benchmarks/epoch_scaling.py [--sizes 100000,1000000,10000000] [--steps 30]
        [--optimizers adam,sparse,lazy_adam] [--graph-sizes 20000,80000,320000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from pmtrec_lab.config import DEFAULT_DIM, DEFAULT_LR, load_config  # noqa: E402
from pmtrec_lab.data.loading import build_rec_dataset  # noqa: E402
from pmtrec_lab.data.sources.synthetic import load_raw  # noqa: E402
from pmtrec_lab.mtl import StepContext, make_method  # noqa: E402
from pmtrec_lab.train import build_model  # noqa: E402
from pmtrec_lab.train.optim import make_optimizer  # noqa: E402
from pmtrec_lab.train.step import train_step  # noqa: E402

OPTIMIZERS = {
    "adam": {},
    "sparse": {"sparse": True},
    "lazy_adam": {"optimizer": "lazy_adam"},
}


def synthetic(interactions: int):
    users = max(100, interactions // 20)
    raw = load_raw(None, num_users=users, num_items=max(50, users // 2), interactions_per_user=20, seed=0)
    return build_rec_dataset(raw, k=2, rating_threshold=None, split_seed=0)


def peak_rss_mb() -> float:
    """This process's peak resident set size (``VmHWM``, Linux), MB; 0 where unavailable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _setup(ds, encoder: str, optim: dict | None):
    cfg = load_config(
        base={
            "data": {"name": "synthetic"},
            "encoder": {"name": encoder, "dim": DEFAULT_DIM, "num_layers": 3},
            "tasks": {"include": ["social:friends", "item_label:category"]},
            "optim": {"lr": DEFAULT_LR, **(optim or {})},
        }
    )
    model = build_model(cfg, ds)
    tasks = list(model.tasks)
    gen = torch.Generator().manual_seed(0)
    per_epoch = tasks[0].steps_for_epoch()
    for t in tasks:
        t.start_epoch(per_epoch, gen)
    return model, tasks, make_optimizer(cfg, model), make_method("ew", len(tasks)), gen, per_epoch


def time_steps(
    datasets: list, encoder: str, steps: int, warmup: int = 2, optim: dict | None = None
) -> list[tuple[float, float, int, int, float]]:
    """Per dataset: median seconds per step over ``steps`` steps after ``warmup``, sampling share,
    steps per epoch, training pairs, median seconds of the optimizer's step. Several datasets are
    stepped in turn (one step each, round after round), so that load from other processes hits them
    alike and their ratio holds."""
    setups = [_setup(ds, encoder, optim) for ds in datasets]
    n = min(warmup + steps, *(s[-1] for s in setups))
    times: list[list[float]] = [[] for _ in setups]
    sampling: list[list[float]] = [[] for _ in setups]
    optimizer: list[list[float]] = [[] for _ in setups]
    for i in range(n):
        for j, (model, tasks, opt, method, gen, per_epoch) in enumerate(setups):
            t0 = time.perf_counter()
            batches = [t.next_batch(gen) for t in tasks]
            t1 = time.perf_counter()
            ctx = StepContext(i, 0, per_epoch, [t.name for t in tasks], gen)
            opt.zero_grad(set_to_none=True)
            train_step(model.encoder, tasks, batches, method, ctx, 1e-4, torch.device("cpu"))
            t2 = time.perf_counter()
            opt.step()
            if i >= min(warmup, n - 1):
                times[j].append(time.perf_counter() - t0)
                sampling[j].append(t1 - t0)
                optimizer[j].append(time.perf_counter() - t2)
    return [
        (statistics.median(t), sum(sm) / sum(t), s[-1], len(ds.split.train), statistics.median(o))
        for t, sm, o, s, ds in zip(times, sampling, optimizer, setups, datasets, strict=True)
    ]


def row_access_ms(table_rows: list[int], rows: int = 10_000, repeats: int = 15) -> list[float]:
    """Median ms to gather and scatter back ``rows`` random unique rows of a [table_rows, dim] float
    table, the tables measured in turn: the memory-access cost of one optimizer pass at each size
    (the same rows, only the table's size, hence its cache residency, differs)."""
    gen = torch.Generator().manual_seed(0)
    tables = [torch.randn(n, DEFAULT_DIM, generator=gen) for n in table_rows]
    times: list[list[float]] = [[] for _ in tables]
    for i in range(repeats + 2):
        for j, table in enumerate(tables):
            idx = torch.randint(table.shape[0], (rows,), generator=gen).unique()
            t0 = time.perf_counter()
            table.index_copy_(0, idx, table.index_select(0, idx).mul_(0.999))
            if i >= 2:
                times[j].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def child(size: int, reference: int, steps: int, optimizers: list[str]) -> None:
    """One size, each optimizer stepped in turn with the reference size (built in the same process:
    its tables are small, so the peak memory stays the size's own)."""
    t0 = time.perf_counter()
    ds = synthetic(size)
    build_s = time.perf_counter() - t0
    datasets = [ds] if size == reference else [ds, synthetic(reference)]
    rows = []
    for name in optimizers:
        res = time_steps(datasets, "mf", steps, optim=OPTIMIZERS[name])
        (step_s, share, per_epoch, n_train, opt_s), ref = res[0], res[-1]
        rows.append({"optimizer": name, "step_s": step_s, "sampling": share, "opt_s": opt_s,
                     "ref_step_s": ref[0], "ref_opt_s": ref[4], "ref_steps_per_epoch": ref[2],
                     "ref_train": ref[3]})
    peak = peak_rss_mb()  # before the row-access tables below
    access = row_access_ms([ds.num_users, datasets[-1].num_users])
    print(json.dumps({
        "interactions": len(ds.interactions), "train": n_train, "steps_per_epoch": per_epoch,
        "users": ds.num_users, "items": ds.num_items, "build_s": build_s, "rows": rows,
        "peak_mb": peak, "row_access_ms": access[0], "ref_row_access_ms": access[1],
        "ref_users": datasets[-1].num_users,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--steps", type=int, default=30, help="timed MF steps per size and optimizer")
    ap.add_argument("--optimizers", default="adam,sparse,lazy_adam")
    ap.add_argument("--sparse", action="store_true", help="(kept for old commands) same as listing sparse")
    ap.add_argument("--graph-sizes", default="20000,80000,320000")
    ap.add_argument("--graph-steps", type=int, default=8)
    ap.add_argument("--reference", type=int, default=100000,
                    help="the size every size is stepped in turn with, in its own child (ratios)")
    ap.add_argument("--thp", action="store_true",
                    help="children run with THP_MEM_ALLOC_ENABLE=1 (huge pages for torch's CPU tensors)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    optimizers = [o for o in args.optimizers.split(",") if o]
    if args.sparse and "sparse" not in optimizers:
        optimizers.append("sparse")
    unknown = sorted(set(optimizers) - set(OPTIMIZERS))
    if unknown:
        ap.error(f"unknown optimizers {unknown}; known: {', '.join(OPTIMIZERS)}")
    if args.child is not None:
        child(args.child, args.reference, args.steps, optimizers)
        return
    print(f"threads={torch.get_num_threads()}; MF + EW (rec + social + category), batch 2048, "
          f"median of {args.steps} steps after 2 warm-up steps, one child process per size; each size "
          f"stepped in turn with the {args.reference:,}-interaction reference in its child ('vs ref': "
          "its seconds per 100k pairs over the reference's, measured together)"
          + ("; THP_MEM_ALLOC_ENABLE=1" if args.thp else ""))
    print(f"{'interactions':>13}{'train pairs':>13}{'steps/ep':>9}{'optimizer':>11}{'ms/step':>9}"
          f"{'s/epoch':>9}{'s per 100k':>11}{'sampling':>9}{'peak MB':>9}{'vs ref':>8}"
          f"{'opt ms (ref)':>14}")
    for size in (int(s) for s in args.sizes.split(",") if s):
        cmd = [sys.executable, __file__, "--child", str(size), "--steps", str(args.steps),
               "--optimizers", ",".join(optimizers), "--reference", str(args.reference)]
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"} if args.thp else None
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            print(f"size {size}: child failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
            continue
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        for row in info["rows"]:
            epoch_s = row["step_s"] * info["steps_per_epoch"]
            per_100k = epoch_s / info["train"] * 1e5
            ref_100k = row["ref_step_s"] * row["ref_steps_per_epoch"] / row["ref_train"] * 1e5
            print(f"{info['interactions']:>13,}{info['train']:>13,}{info['steps_per_epoch']:>9}"
                  f"{row['optimizer']:>11}{row['step_s'] * 1e3:>9.1f}{epoch_s:>9.1f}{per_100k:>11.3f}"
                  f"{100 * row['sampling']:>8.1f}%{info['peak_mb']:>9.0f}{per_100k / ref_100k:>7.2f}x"
                  f"{row['opt_s'] * 1e3:>7.1f} ({row['ref_opt_s'] * 1e3:.1f})", flush=True)
        print(f"{'':>13}gather + scatter of 10k random rows: {info['row_access_ms']:.2f} ms in a "
              f"{info['users']:,}-row table, {info['ref_row_access_ms']:.2f} ms in the reference's "
              f"{info['ref_users']:,} rows ({info['row_access_ms'] / info['ref_row_access_ms']:.2f}x)",
              flush=True)
    graph_sizes = [int(s) for s in args.graph_sizes.split(",") if s]
    for enc in ("lightgcn", "hetero") if graph_sizes else ():
        print(f"\n{enc}: step time against training edges ({args.graph_steps} steps, DGL path on CPU)")
        print(f"{'train edges':>13}{'ms/step':>10}{'ms/step per 100k edges':>24}")
        for size in graph_sizes:
            ds = synthetic(size)
            sec, _, _, n_train, _ = time_steps([ds], enc, args.graph_steps, warmup=1)[0]
            print(f"{n_train:>13,}{sec * 1e3:>10.1f}{sec * 1e3 / n_train * 1e5:>24.1f}", flush=True)


if __name__ == "__main__":
    main()
