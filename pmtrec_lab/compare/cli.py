"""``pmtrec-lab compare``: run (or resume) a grid, then write its tables. The parser imports only
light modules; the grid machinery (torch, DGL, pandas) is imported when the command runs, so
that ``pmtrec-lab --help`` starts in about a second."""

from __future__ import annotations

import argparse
from pathlib import Path

from pmtrec_lab.execution.executors import EXECUTORS, make_executor
from pmtrec_lab.execution.resources import parse_resources
from pmtrec_lab.tracking import add_tracking_options, tracking_from_args

__all__ = ["add_compare_command"]


def _cmd_compare(args: argparse.Namespace) -> int:
    """Run the grid (unless ``--tables-only``), then write and print its tables. The grid file and
    its ``--set`` overrides are validated first: an invalid grid is one ``ConfigError`` line."""
    import yaml

    from pmtrec_lab.compare.grid import run_grid
    from pmtrec_lab.compare.spec import load_grid
    from pmtrec_lab.compare.tables import markdown_tables, summarize
    from pmtrec_lab.errors import ConfigError, RunsFailedError
    from pmtrec_lab.paths import write_text_atomic

    spec = load_grid(args.grid, args.set)  # validated whole before anything is written
    if args.tuned is not None:
        from pmtrec_lab.compare.tuned import with_tuned

        spec = with_tuned(spec, Path(args.tuned))
    out = Path(args.out)
    tracking = None if args.tables_only else tracking_from_args(args, out.resolve().name)
    failure: Exception | None = None
    if args.tables_only:
        tables = summarize(out, spec)  # writes nothing when no run of the grid has finished
        if not tables:
            raise ConfigError(
                f"compare --tables-only: {out} holds no finished run of this grid (no "
                "runs/<dataset>/<method>/<run>/metrics.json); nothing was written. Point --out at the "
                "grid's folder, or run the grid first (without --tables-only)"
            )
        # the grid the tables describe
        write_text_atomic(out / "grid.resolved.yaml", yaml.safe_dump(spec.record(), sort_keys=False))
    else:
        executor = make_executor(
            args.executor,
            args.jobs,
            address=args.address,
            resources=parse_resources(args.resources_per_run) if args.resources_per_run else None,
            max_retries=args.max_retries,
        )
        try:
            run_grid(
                spec,
                out,
                args.data_dir,
                args.max_runs,
                args.jobs,
                executor=executor,
                retry_failed=args.retry_failed,
                tracking=tracking,
            )
        except RunsFailedError as exc:  # the tables of what finished first, then the error
            failure = exc
        tables = summarize(out, spec)
    if "summary" in tables:
        print(markdown_tables(tables))
    if failure is not None:
        raise failure
    return 0


def add_compare_command(sub) -> None:
    """Register ``compare`` on the CLI's sub-parsers."""
    p = sub.add_parser("compare", help="run a resumable grid of methods x datasets x seeds and write tables")
    p.add_argument("--grid", default=None, help="grid YAML (datasets, methods, seeds, lrs, base)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a grid field, e.g. datasets=[ciao] or seeds=[0]",
    )
    p.add_argument("--out", default="results/grid", help="grid directory (runs + tables)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-runs", type=int, default=None, help="stop after training this many runs")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes, one (dataset, method) each; threads are split between them",
    )
    p.add_argument(
        "--executor",
        choices=sorted(EXECUTORS),
        default=None,
        help="how units run (default: ray with --address or --resources-per-run, process when "
        "--jobs > 1, else sequential)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="ray: the cluster to join (host:port of 'ray start --head'); default: a local Ray instance",
    )
    p.add_argument(
        "--resources-per-run",
        default=None,
        metavar="cpu=N,gpu=F",
        help="ray: what each run (a Ray task) reserves, e.g. cpu=1,gpu=0.25 (default cpu=1,gpu=0)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=None,
        help="ray: retries of a run whose worker was lost (default 2; the retry starts at epoch 0)",
    )
    p.add_argument(
        "--tuned",
        default=None,
        metavar="DIR",
        help="run every seed from the configurations 'pmtrec-lab tune' chose "
        "(DIR/<dataset>/<method>/best.yaml)",
    )
    p.add_argument("--tables-only", action="store_true", help="only rebuild tables from finished runs")
    add_tracking_options(p, "every run of the grid (experiment: the --out folder's name)")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="train again the runs that failed in an earlier call (left alone otherwise; "
        "interrupted runs always resume)",
    )
    p.set_defaults(func=_cmd_compare)
