"""``pmtrec-lab tune``: an equal-budget tuning study of a grid's methods (Ray Tune, seeded TPE,
ASHA); writes ``best.yaml`` and ``trials.csv`` per (dataset, method) for ``compare --tuned``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pmtrec_lab.execution.resources import parse_resources
from pmtrec_lab.tracking import add_tracking_options, tracking_from_args

__all__ = ["add_tune_command"]


def _cmd_tune(args: argparse.Namespace) -> int:
    from pmtrec_lab.compare.spec import load_grid
    from pmtrec_lab.tune.study import Budget, run_study

    spec = load_grid(args.grid, args.set)
    budget = Budget(
        trials=args.trials,
        max_epochs=args.max_epochs,
        searcher_seed=args.searcher_seed,
        grace_period=args.grace_period if args.grace_period is not None else min(10, args.max_epochs),
        reduction_factor=args.reduction_factor,
        concurrent=args.concurrent,
    )
    resources = parse_resources(args.resources_per_trial, "--resources-per-trial")
    chosen = run_study(
        spec,
        Path(args.spaces),
        budget,
        Path(args.out),
        args.data_dir,
        args.address,
        resources,
        args.max_retries,
        tracking_from_args(args, Path(args.out).resolve().name),
    )
    print("| dataset | method | best trial | valid NDCG@20 | lr | weight decay | parameters |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b in chosen:
        print(
            f"| {b['dataset']} | {b['method']} | {b['trial']} | {100 * b['best_valid_ndcg@20']:.2f} | "
            f"{b['lr']:.3g} | {b['weight_decay']:.3g} | {b['params']} |"
        )
    return 0


def add_tune_command(sub) -> None:
    """Register ``tune`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "tune", help="tune every method of a grid with the same budget (Ray Tune, TPE, ASHA)"
    )
    p.add_argument("--grid", default=None, help="grid YAML: datasets, methods, seeds (seed 0 tunes), base")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a grid field")
    p.add_argument(
        "--spaces",
        default="search_spaces",
        help="folder of search spaces: <method>.yaml, or <dataset>/<method>.yaml for one dataset",
    )
    p.add_argument("--trials", type=int, required=True, help="trials per (dataset, method)")
    p.add_argument("--max-epochs", type=int, required=True, help="epochs per trial at most (ASHA's max_t)")
    p.add_argument("--out", default="results/tuned", help="study folder (best.yaml and trials.csv per unit)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--address", default=None, help="the Ray cluster to join; default: a local Ray instance")
    p.add_argument("--resources-per-trial", default=None, metavar="cpu=N,gpu=F", help="default cpu=1,gpu=0")
    p.add_argument("--searcher-seed", type=int, default=0, help="seed of Optuna's TPE sampler")
    p.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="ASHA: epochs before the first cut (default 10, or --max-epochs when smaller: after 1-3 "
        "epochs NDCG@20 is about 0.005 on the real datasets and a cut there is close to random)",
    )
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA: keep 1 / this at each rung")
    p.add_argument("--concurrent", type=int, default=1, help="trials at a time (1: reproducible)")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a trial whose worker was lost")
    add_tracking_options(p, "every unit and trial (experiment: the --out folder's name)")
    p.set_defaults(func=_cmd_tune)
