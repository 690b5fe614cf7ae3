"""Training and evaluation time at Epinions size, in one run: MF and LightGCN, EW and PMTRec.

Synthetic data of Epinions' 5-core shape from the synthetic generator (``--users 20000 --items
32000``, 26 interactions per user before the 5-core and the split: about 30k items and 435k
training pairs survive; a
trust relation of 16 links per user, ``social:friends``; 26 item categories,
``item_label:category``). Per encoder (dim 64; LightGCN 3 layers, ``encoder.propagation=auto``:
DGL on CPU), an EW model and a PMTRec model from the same seed are stepped in turn, one step
each, over one epoch (``--steps N``: the first N steps, extrapolated), so that load from other
processes hits both alike; then one full-ranking validation evaluation of each encoder.

Prints the data's shape, seconds per epoch per (encoder, method), PMTRec over EW, and the
evaluation seconds.

    .venv/bin/python benchmarks/epinions_train.py [--steps N] [--encoders mf,lightgcn]
"""

from __future__ import annotations

import argparse
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
from pmtrec_lab.train.trainer import evaluate_split  # noqa: E402

METHODS = ("ew", "pmtrec")


def epinions_like(users: int, items: int, per_user: int, trust_per_user: int, categories: int, k: int):
    """13 communities preferring 6 categories each and uniform popularity within a category, so that
    most items survive the 5-core (with the generator's defaults two thirds of them would not)."""
    raw = load_raw(
        None,
        num_users=users,
        num_items=items,
        interactions_per_user=per_user,
        friends_per_user=trust_per_user,
        num_categories=categories,
        num_communities=13,
        preferred_per_community=6,
        popularity_exponent=1.0,
        seed=0,
    )
    return build_rec_dataset(raw, k=k, rating_threshold=None, split_seed=0)


def setup(ds, encoder: str, method: str):
    cfg = load_config(
        base={
            "data": {"name": "synthetic"},
            "encoder": {"name": encoder, "dim": DEFAULT_DIM, "num_layers": 3},
            "tasks": {"include": ["social:friends", "item_label:category"]},
            "method": {"name": method},
            "optim": {"lr": DEFAULT_LR},
        }
    )
    model = build_model(cfg, ds)
    tasks = list(model.tasks)
    gen = torch.Generator().manual_seed(0)
    steps = tasks[0].steps_for_epoch()
    for t in tasks:
        t.start_epoch(steps, gen)
    return cfg, model, tasks, make_optimizer(cfg, model), make_method(method, len(tasks)), gen, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--items", type=int, default=32000)
    ap.add_argument("--per-user", type=int, default=26)
    ap.add_argument("--trust-per-user", type=int, default=16)
    ap.add_argument("--categories", type=int, default=26)
    ap.add_argument("--k-core", type=int, default=5)
    ap.add_argument("--encoders", default="mf,lightgcn")
    ap.add_argument("--steps", type=int, default=None, help="time the first N steps of the epoch only")
    args = ap.parse_args()
    cpu = torch.device("cpu")
    t0 = time.perf_counter()
    ds = epinions_like(
        args.users, args.items, args.per_user, args.trust_per_user, args.categories, args.k_core
    )
    trust = ds.relations["friends"]
    print(
        f"threads={torch.get_num_threads()}; synthetic Epinions shape: {ds.num_users:,} users, "
        f"{ds.num_items:,} items, {len(ds.split.train):,} training pairs, {len(trust):,} trust links, "
        f"{args.categories} categories (built in {time.perf_counter() - t0:.1f} s)"
    )
    print(f"{'encoder':<10}{'method':<8}{'steps':>7}{'s/epoch':>9}{'ms/step':>9}{'/ EW':>7}")
    for enc in args.encoders.split(","):
        runs = {m: setup(ds, enc, m) for m in METHODS}
        steps = runs["ew"][-1]
        n = steps if args.steps is None else min(steps, args.steps)
        seconds = dict.fromkeys(METHODS, 0.0)
        for i in range(n):
            for m, (_, model, tasks, opt, method, gen, _) in runs.items():
                start = time.perf_counter()
                batches = [t.next_batch(gen) for t in tasks]
                ctx = StepContext(i, 0, steps, [t.name for t in tasks], torch.Generator().manual_seed(i))
                opt.zero_grad(set_to_none=True)
                train_step(model.encoder, tasks, batches, method, ctx, 1e-4, cpu)
                opt.step()
                seconds[m] += time.perf_counter() - start
        for m in METHODS:
            per_epoch = seconds[m] * steps / n
            print(
                f"{enc:<10}{m:<8}{n:>7}{per_epoch:>9.1f}{seconds[m] / n * 1e3:>9.1f}"
                f"{seconds[m] / seconds['ew']:>6.2f}x",
                flush=True,
            )
        cfg, model = runs["ew"][0], runs["ew"][1]
        start = time.perf_counter()
        res = evaluate_split(model, ds, cfg, "valid", cpu)
        print(
            f"{enc:<10}evaluation (validation, full ranking of {res.num_users_evaluated:,} users): "
            f"{time.perf_counter() - start:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
