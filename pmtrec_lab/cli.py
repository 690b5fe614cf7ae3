"""``pmtrec-lab``: datasets, training, evaluation, comparisons and reports from the command line."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pmtrec_lab.errors import PmtrecError
from pmtrec_lab.tracking import add_tracking_options, tracking_from_args


def _cmd_datasets_list(args: argparse.Namespace) -> int:
    from pmtrec_lab.data.registry import DATASETS
    from pmtrec_lab.paths import data_dir

    root = data_dir(args.data_dir)
    print(f"data directory: {root}")
    print(f"{'name':<10} {'k-core':>6}  {'available':<10} tasks")
    for spec in DATASETS.values():
        if spec.folder:
            print(f"{spec.name:<10} {spec.k_core:>6}  {'folder':<10} rec, declared (data.path=FOLDER; "
                  "data.tasks or FOLDER/pmtrec.yaml)")
            continue
        if spec.generated:
            avail = "generated"
        elif spec.embedded:
            avail = "embedded"
        else:
            ok = all((root / spec.name / f).is_file() for f in spec.files)
            avail = "yes" if ok else "missing"
        tasks = ", ".join(t.name + ("" if t.enabled else " (off)") for t in spec.tasks)
        print(f"{spec.name:<10} {spec.k_core:>6}  {avail:<10} rec, {tasks}")
    return 0


def _data_section(args: argparse.Namespace):
    """The ``data`` section ``datasets info`` / ``export`` read: ``--config``'s, then NAME,
    ``--path``, ``--data-dir``, ``--k-core``, ``--split-seed``, then ``--set`` (keys of the data
    section, with or without a leading ``data.``)."""
    from pydantic import ValidationError

    from pmtrec_lab.config import DataConfig, apply_overrides
    from pmtrec_lab.errors import ConfigError, format_validation_errors
    from pmtrec_lab.yaml_files import read_yaml_file

    raw: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        loaded = read_yaml_file(path, "config file") or {}
        section = loaded.get("data", {}) if isinstance(loaded, dict) else None
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: expected a mapping with a data section")
        raw.update(section)
    raw["name"] = args.name
    for key in ("path", "data_dir", "k_core"):
        value = getattr(args, key, None)
        if value is not None:
            raw[key] = str(value) if key != "k_core" else value
    if getattr(args, "split_seed", None) is not None:
        raw["split_seed"] = args.split_seed
    sets = [s[len("data."):] if s.startswith("data.") else s for s in getattr(args, "set", None) or []]
    raw = apply_overrides(raw, sets)
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"data settings: {format_validation_errors(err)}") from None


def _cmd_datasets_info(args: argparse.Namespace) -> int:
    from pmtrec_lab.data import dataset_for_config, dataset_info
    from pmtrec_lab.data.loading import default_tasks_of

    data = _data_section(args)
    ds = dataset_for_config(data)
    info = dataset_info(ds)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset {info['name']}")
    defaults = default_tasks_of(ds)
    params = info["processed"]["params"]
    if isinstance(params.get("atomic"), dict) and "tasks" in params["atomic"]:
        # the declarations in full are in --json; the table below shows them
        params["atomic"] = {**params["atomic"], "tasks": [t.name for t in defaults]}
    for section in ("raw", "processed", "split", "unmatched"):
        if section not in info:
            continue
        note = "  (per file: distinct ids that appear in no interaction)" if section == "unmatched" else ""
        print(f"  {section}:{note}")
        for k, v in info[section].items():
            print(f"    {k}: {v}")
    if "aux_holdout" in info:  # data.aux_holdout (on by default): the task rows below are what trains
        print(f"  aux_holdout: ({params.get('aux_holdout')} of each auxiliary set, never trained on)")
        for k, v in info["aux_holdout"].items():
            print(f"    {k}: valid {v['valid']}, test {v['test']}")
    origin = ""
    if data.path is not None:
        where = data.atomic_settings().origin
        origin = f" (declared in {where})" if where else " (none declared: the tasks the files offer)"
    print(f"  tasks{origin}:")
    rows = [{k: str(v) for k, v in r.items()} for r in info["tasks"]]
    if not rows:
        print("    none besides the main task")
    else:
        keys = ["name", "type", "source", "loss", "rows"]
        width = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
        print("    " + "  ".join(k.ljust(width[k]) for k in keys).rstrip())
        for r in rows:
            print("    " + "  ".join(r[k].ljust(width[k]) for k in keys).rstrip())
        off = [t.name for t in defaults if not t.enabled]
        if off:
            print(f"    off by default (use tasks.include): {', '.join(off)}")
    return 0


def _cmd_datasets_export(args: argparse.Namespace) -> int:
    from pmtrec_lab.data.export import export_dataset

    out = export_dataset(args.name, args.out, args.format, args.data_dir)
    print(f"wrote {out}")
    print(f"read it back: pmtrec-lab datasets info atomic --path {out}")
    return 0


def _load_cfg(args: argparse.Namespace):
    from pmtrec_lab.config import load_config

    sets = list(args.set)
    if getattr(args, "data_dir", None) is not None:  # as every other command reads datasets
        sets.append(f"data.data_dir={args.data_dir}")
    return load_config(args.config, sets)


def _cmd_train(args: argparse.Namespace) -> int:
    from pmtrec_lab.train import train

    cfg = _load_cfg(args)
    tracking = tracking_from_args(args)
    if tracking is None:
        run = train(cfg, args.out, resume=not args.restart)
    else:
        from pmtrec_lab.tracking import tracked

        with tracked(tracking, args.out) as on_epoch:
            run = train(cfg, args.out, resume=not args.restart, on_epoch=on_epoch)
    print(
        json.dumps({"best_epoch": run.metrics.get("best_epoch"), "test": run.metrics.get("test")}, indent=2)
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pmtrec_lab.train import evaluate_run

    result = evaluate_run(
        args.run_dir,
        device=args.device,
        allow_changed_data=args.allow_changed_data,
        allow_unfinished=args.allow_unfinished,
    )
    print(json.dumps(result, indent=2))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from pmtrec_lab.mtl import method_names, method_table, method_table_markdown
    from pmtrec_lab.mtl.registry import params_table_markdown

    if args.params:
        print(params_table_markdown(args.params))
    elif args.markdown:
        print(method_table_markdown())
    elif args.names:
        print("\n".join(method_names(args.family)))
    else:
        rows = [r for r in method_table() if args.family is None or r["family"] == args.family]
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['family']:<8}  {r['summary']}")
            print(f"{'':<{width}}  {'':<8}  parameters: {r['parameters']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pmtrec-lab", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="list datasets or show their statistics")
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    dl = ds_sub.add_parser("list", help="registered datasets and whether their files are present")
    dl.add_argument("--data-dir", default=None)
    dl.set_defaults(func=_cmd_datasets_list)
    di = ds_sub.add_parser(
        "info", help="raw and preprocessed counts, relation and split sizes, the dataset's tasks"
    )
    di.add_argument("name", help="a registered dataset, or atomic (with --path)")
    di.add_argument("--data-dir", default=None)
    di.add_argument(
        "--path", default=None, help="atomic: the folder of atomic files (relative: under the data dir)"
    )
    di.add_argument("--config", default=None, help="YAML configuration whose data section is used")
    di.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="data-section override, repeatable (e.g. fields.user=uid, tasks=[...])",
    )
    di.add_argument("--k-core", type=int, default=None)
    di.add_argument("--split-seed", type=int, default=None)
    di.add_argument("--json", action="store_true")
    di.set_defaults(func=_cmd_datasets_info)
    dx = ds_sub.add_parser("export", help="write a registered dataset as RecBole atomic files")
    dx.add_argument("name")
    dx.add_argument("--format", default="atomic", choices=("atomic",))
    dx.add_argument("--out", required=True, help="new or empty folder; its name is the files' stem")
    dx.add_argument("--data-dir", default=None)
    dx.set_defaults(func=_cmd_datasets_export)

    tr = sub.add_parser("train", help="train one configuration into a run directory")
    tr.add_argument("--config", default=None, help="YAML configuration file")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, repeatable")
    tr.add_argument("--out", required=True, help="run directory (resumed if it holds an unfinished run)")
    tr.add_argument("--restart", action="store_true", help="ignore last.pt and start over")
    tr.add_argument("--data-dir", default=None, help="the datasets folder (as --set data.data_dir=...)")
    add_tracking_options(tr, "the run")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a run's best checkpoint on test")
    ev.add_argument("run_dir")
    ev.add_argument("--device", default="cpu")
    ev.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="evaluate even when the data's fingerprint differs from the one the run trained on",
    )
    ev.add_argument(
        "--allow-unfinished",
        action="store_true",
        help="evaluate the best checkpoint so far of a run that has not finished (paused, failed, "
        "stopped or still training), with a notice naming its epoch",
    )
    ev.set_defaults(func=_cmd_evaluate)

    me = sub.add_parser("methods", help="the registered weighting methods, their family and parameters")
    me.add_argument("--family", choices=("baseline", "pmtrec"), default=None)
    me.add_argument("--markdown", action="store_true", help="the method table of docs/reference.md")
    me.add_argument("--names", action="store_true", help="names only, one a line")
    me.add_argument("--params", metavar="METHOD", default=None, help="METHOD's parameters, a Markdown table")
    me.set_defaults(func=_cmd_methods)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


def _register_compare(sub) -> None:
    try:
        from pmtrec_lab.compare import add_compare_command
    except ImportError:
        return
    add_compare_command(sub)


def _register_report(sub) -> None:
    try:
        from pmtrec_lab.reports.cli import add_report_command
    except ImportError:
        return
    add_report_command(sub)


def _register_tune(sub) -> None:
    try:
        from pmtrec_lab.tune.cli import add_tune_command
    except ImportError:
        return
    add_tune_command(sub)


_EXTRA_COMMANDS = [_register_compare, _register_tune, _register_report]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the command's main thread: a run is stopped and marked as Ctrl-C marks
    it (``status.json``: ``failed``, ``interrupted``; it resumes when rerun) instead of being
    killed with ``status.json`` left at ``running``."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` in this process's main thread
    (a KeyboardInterrupt, so every ``except KeyboardInterrupt`` cleanup runs). Left alone where
    SIGTERM already has a handler, or off the main thread. A child forked meanwhile (a grid's
    worker processes) keeps the default: it dies as before."""
    owner = os.getpid()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills, as before
        if os.getpid() != owner:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure a user can meet ends in one line on stderr naming the file
    or setting and what to do (exit 2; 1 for an unexpected error, 130 when interrupted, 143 on
    SIGTERM). ``--debug`` (or ``PMTREC_DEBUG=1``) shows the traceback instead."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PMTREC_DEBUG", "") not in ("", "0")
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader closed the pipe (``pmtrec-lab methods | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush fails nowhere
        return 141  # 128 + SIGPIPE, as a shell reports a tool stopped by the closed pipe
    except Exception as exc:
        if debug:
            raise
        message, code = describe_error(exc)
        print(f"error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt as exc:
        if debug:
            raise
        how, code = ("interrupted", 130)
        if isinstance(exc, Terminated):
            how, code = ("terminated (SIGTERM)", 128 + signal.SIGTERM)
        print(f"error: {how} (a run resumes from its last finished epoch when rerun)", file=sys.stderr)
        return code


def describe_error(exc: BaseException) -> tuple[str, int]:
    """The one line (without ``error:``) and exit code the CLI gives for ``exc``."""
    if isinstance(exc, PmtrecError | ValueError):
        return str(exc), 2
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else "a file"
        what = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, PermissionError):
            return f"{where}: permission denied; check its permissions or choose another path", 2
        if isinstance(exc, FileNotFoundError):
            return f"{where}: not found" if exc.filename is not None else (str(exc) or "file not found"), 2
        if exc.errno == errno.ENOSPC:
            return f"{where}: no space left on the device; free some space and rerun", 2
        return f"{where}: {what}", 2
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"unexpected {type(exc).__name__}: {detail} (rerun with --debug for the traceback)", 1


if __name__ == "__main__":
    sys.exit(main())
