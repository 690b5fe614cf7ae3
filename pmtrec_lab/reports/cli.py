"""``pmtrec-lab report``: execute the report notebooks with papermill into an HTML report.

    pmtrec-lab report [--params FILE] [--out DIR] [--notebooks 01,03] [--set KEY=VALUE ...]

``--params`` is a YAML file::

    common:                     # every notebook (e.g. dataset, epochs, loader_args)
      epochs: 20
    03_gradient_conflicts:      # one notebook (its stem or its 01..07 prefix)
      compare_align_off: true

``--set KEY=VALUE`` (repeatable; VALUE parsed as YAML) sets a common parameter, or one notebook's
with ``NOTEBOOK.KEY=VALUE`` (``--set 06.run_small_grid=true``); ``--set`` wins over the file.
The report goes to ``--out`` (default ``reports``): one page per notebook, ``index.html`` and
``index.json``; the command exits 1 when any notebook failed.

Before anything runs, every parameter is checked against the notebooks' ``parameters`` cells
(:mod:`pmtrec_lab.reports.params`): a name no selected notebook declares, or a value whose type
differs from the declared default (``epochs=2.7``), is refused with the known names, and so is
an ``--out`` that cannot be written. ``--check`` stops after these checks and prints the plan.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from pmtrec_lab.config import parse_override
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.reports.defaults import NOTEBOOKS, REPORT_NOTEBOOK_PARAMS, notebook_path, resolve_notebook
from pmtrec_lab.reports.params import check_output_folder, check_report_params
from pmtrec_lab.reports.runner import report_files
from pmtrec_lab.yaml_files import read_yaml_file

__all__ = ["add_report_command", "build_report_params", "run_report_command"]


def _load_params_file(path: str | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    if not path:
        return {}, {}
    p = Path(path)
    data = read_yaml_file(p, "params file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"params file {p}: expected a mapping of 'common' and notebook names")
    common = data.pop("common", None) or {}
    if not isinstance(common, dict):
        raise ConfigError(f"params file {p}: 'common' must be a mapping")
    per: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        try:
            name = resolve_notebook(str(key))
        except ValueError as exc:
            raise ConfigError(f"params file {p}: {exc}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"params file {p}: parameters of {key!r} must be a mapping")
        per.setdefault(name, {}).update(value)
    return dict(common), per


#: parameters holding paths: a relative one is taken relative to where it was written (the shell's
#: directory for ``--set``, the params file's folder), since notebooks run in ``notebooks/``
PATH_PARAMS = frozenset({"data_dir", "runs_dir", "results_dir"})


def _absolute_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    return {
        k: str((base / v).resolve()) if k in PATH_PARAMS and isinstance(v, str) and v else v
        for k, v in values.items()
    }


def build_report_params(
    params_file: str | None, overrides: list[str], notebooks: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(common, per-notebook) parameters: report defaults < params file < ``--set`` overrides.

    Per-notebook entries are kept only for the selected ``notebooks`` (run_report rejects
    parameters for a notebook that is not run).
    """
    common, per = _load_params_file(params_file)
    if params_file is not None:
        base = Path(params_file).resolve().parent
        common = _absolute_paths(common, base)
        per = {n: _absolute_paths(v, base) for n, v in per.items()}
    merged: dict[str, dict[str, Any]] = {n: dict(v) for n, v in REPORT_NOTEBOOK_PARAMS.items()}
    for name, values in per.items():
        merged.setdefault(name, {}).update(values)
    for item in overrides:
        path, value = parse_override(item)
        if path[-1] in PATH_PARAMS and isinstance(value, str) and value:
            value = str(Path(value).resolve())
        if len(path) == 1:
            common[path[0]] = value
        elif len(path) == 2:
            try:
                name = resolve_notebook(path[0])
            except ValueError as exc:
                raise ConfigError(f"--set {item!r}: {exc}") from None
            merged.setdefault(name, {})[path[1]] = value
        else:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE or NOTEBOOK.KEY=VALUE")
    return common, {n: v for n, v in merged.items() if n in notebooks}


def _selected(spec: str | None) -> list[str]:
    if not spec:
        return list(NOTEBOOKS)
    try:
        return [resolve_notebook(s.strip()) for s in spec.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"--notebooks: {exc}") from None


def run_report_command(args: argparse.Namespace) -> int:
    """Run the selected notebooks into ``args.out``; 0 when all succeeded, else 1."""
    from pmtrec_lab.reports.runner import run_report

    names = _selected(args.notebooks)
    common, per = build_report_params(args.params, args.set, names)
    paths = [notebook_path(n) for n in names]
    check_report_params(paths, common, per)
    out = Path(args.out).resolve()
    check_output_folder(out, report_files(names), "--out")
    if args.check:
        print(f"report: parameters and --out checked; nothing run. Would write {out}:")
        for name in names:
            print(f"  {name}: {({**common, **per.get(name, {})})!r}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_report(
        paths,
        per,
        out,
        kernel_name=args.kernel,
        common_params=common,
        timeout_per_cell=args.timeout,
        show_code=args.show_code,
    )
    for e in result.entries:
        status = "ok" if e.ok else f"FAILED ({e.error})"
        print(f"{e.name:<26} {status:<10} {e.duration_s:7.1f} s")
    print(f"report: {result.index_html}")
    if not result.ok:
        print(f"error: {sum(not e.ok for e in result.entries)} notebook(s) failed", file=sys.stderr)
        return 1
    return 0


def add_report_command(subparsers: Any) -> None:
    """Register ``report`` on the ``pmtrec-lab`` sub-command parser."""
    rp = subparsers.add_parser(
        "report",
        help="execute the report notebooks (papermill) into HTML pages and an index",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("--params", default=None, help="YAML file: 'common' and per-notebook parameters")
    rp.add_argument("--out", default="reports", help="output folder (default: reports)")
    rp.add_argument("--notebooks", default=None, help="comma-separated subset, e.g. 01,03 (default: all)")
    rp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override, repeatable"
    )
    rp.add_argument("--kernel", default="pmtrec-lab", help="Jupyter kernel name (default: pmtrec-lab)")
    rp.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell (default 1800)")
    rp.add_argument("--show-code", action="store_true", help="show every code cell in the pages")
    rp.add_argument(
        "--check",
        action="store_true",
        help="check the parameters and --out, print what would run, run nothing",
    )
    rp.set_defaults(func=run_report_command)
