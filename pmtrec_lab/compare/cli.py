"""``pmtrec-lab compare``: run (or resume) a grid, then write its tables."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from pmtrec_lab.compare.executors import EXECUTORS
from pmtrec_lab.compare.grid import run_grid
from pmtrec_lab.compare.spec import load_grid
from pmtrec_lab.compare.tables import markdown_tables, summarize
from pmtrec_lab.paths import write_text_atomic

__all__ = ["add_compare_command"]


def _cmd_compare(args: argparse.Namespace) -> int:
    """Run the grid (unless ``--tables-only``), then write and print its tables. The grid file and
    its ``--set`` overrides are validated first: an invalid grid is one ``ConfigError`` line."""
    spec = load_grid(args.grid, args.set)  # validated whole before anything is written
    out = Path(args.out)
    if args.tables_only:  # the grid the tables describe
        write_text_atomic(out / "grid.resolved.yaml", yaml.safe_dump(spec.model_dump(), sort_keys=False))
    else:
        run_grid(spec, out, args.data_dir, args.max_runs, args.jobs, executor=args.executor)
    tables = summarize(out, spec)
    if "summary" in tables:
        print(markdown_tables(tables))
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
        help="how units run (default: process when --jobs > 1, else sequential)",
    )
    p.add_argument("--tables-only", action="store_true", help="only rebuild tables from finished runs")
    p.set_defaults(func=_cmd_compare)
