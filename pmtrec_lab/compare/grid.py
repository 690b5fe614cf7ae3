"""Running a grid: every (dataset, method) unit trains seed 0 at each learning rate, then the other
seeds at the rate seed 0's validation NDCG@20 chose. Finished runs are never redone; an
unfinished one resumes from its last epoch. Units run through an ``Executor`` (``executors``):
a unit's runs stay in order, so every executor gives the sequential grid's results. The grid is
validated again before anything is written (a ``model_copy`` may have changed it unchecked).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pmtrec_lab.compare.layout import (
    choose_lr,
    failed_reason,
    give_up_reason,
    run_label,
    run_path,
    warn_renamed,
)
from pmtrec_lab.compare.spec import GridSpec, run_config, unit_lrs, validate_grid
from pmtrec_lab.data import dataset_for_config
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.execution.executors import Executor, SequentialExecutor, make_executor
from pmtrec_lab.paths import write_text_atomic
from pmtrec_lab.tracking import Tracking, tracked
from pmtrec_lab.train.run import load_run

__all__ = ["UnitJob", "run_grid", "run_unit", "track_finished"]


@dataclass(frozen=True)
class UnitJob:
    """One grid's units as a picklable callable: ``UnitJob(...)((dataset, method))`` trains that
    unit's runs and returns how many it trained and the ``(run, error)`` of those that failed."""

    spec: GridSpec
    out: Path
    data_dir: str | None = None
    retry_failed: bool = False
    tracking: Tracking | None = None

    def __call__(self, unit: tuple[str, str]) -> tuple[int, list[tuple[str, str]]]:
        dataset, method = unit
        failed: list[tuple[str, str]] = []
        trained = run_unit(
            self.spec,
            self.out,
            dataset,
            method,
            self.data_dir,
            failed=failed,
            retry_failed=self.retry_failed,
            tracking=self.tracking,
        )
        return trained, failed


def run_grid(
    spec: GridSpec,
    out: Path,
    data_dir: str | None = None,
    max_runs: int | None = None,
    jobs: int = 1,
    executor: Executor | str | None = None,
    retry_failed: bool = False,
    tracking: Tracking | None = None,
) -> int:
    """Run (or resume) every run of the grid; returns the number of runs trained in this call.

    ``executor`` (an ``Executor`` or its name; default: ``process`` when ``jobs > 1``, else
    ``sequential``) runs the (dataset, method) units; with ``process`` each of the ``jobs``
    workers has ``torch.get_num_threads() // jobs`` threads (at least one). An executor whose
    runs return their files (``ray``) is given runs instead (``remote_grid.run_grid_remote``).
    ``max_runs`` stops after that many trained runs and needs the sequential executor (it counts
    one process's runs). The grid is validated first (``validate_grid``): an invalid one writes
    nothing.

    A run that fails (its loss diverges, a method raises) is recorded failed with its reason
    (its ``status.json``; the progress table lists it) and every other run goes on, on every
    executor; a learning rate whose seed-0 run failed is no candidate. ``RunsFailedError``
    (naming the runs) is raised once all have finished. A later call leaves runs that failed
    alone unless ``retry_failed``; interrupted runs always resume.

    ``tracking`` (``pmtrec_lab.tracking``) also logs every run of the grid, finished ones included,
    to an MLflow store; it changes no result.
    """
    from pmtrec_lab.errors import RunsFailedError

    spec = validate_grid(spec.model_dump(), "grid")
    if not isinstance(executor, Executor):
        executor = make_executor(executor, jobs)
    if max_runs is not None and not isinstance(executor, SequentialExecutor):
        raise ConfigError(
            "compare: --max-runs counts runs of one process; it cannot be combined with --jobs or "
            "--executor ray"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "grid.resolved.yaml", yaml.safe_dump(spec.record(), sort_keys=False))
    if executor.returns_artefacts:  # no shared filesystem: runs, not units, and their files return
        from pmtrec_lab.compare.remote_grid import run_grid_remote

        threads = getattr(getattr(executor, "resources", None), "threads", 1)
        try:
            return run_grid_remote(spec, out, data_dir, executor, threads, retry_failed=retry_failed)[0]
        finally:  # the runs' files are back on this machine: logged from them
            if tracking is not None:
                track_finished(spec, out, tracking)
    if tracking is not None:
        tracking.prepare()
    units = [(dataset, method) for dataset in spec.datasets for method in spec.methods]
    trained, failed = 0, []
    if max_runs is None:
        job = UnitJob(spec, out, data_dir, retry_failed, tracking)
        for unit_trained, unit_failed in executor.run(job, units):
            trained += unit_trained
            failed += unit_failed
    else:
        for dataset, method in units:
            trained += run_unit(
                spec, out, dataset, method, data_dir, max_runs - trained, failed, retry_failed, tracking
            )
            if trained >= max_runs:
                break
    if failed:
        raise RunsFailedError(failed, trained)
    return trained


def run_unit(
    spec: GridSpec,
    out: Path,
    dataset: str,
    method: str,
    data_dir: str | None,
    max_runs: int | None = None,
    failed: list[tuple[str, str]] | None = None,
    retry_failed: bool = False,
    tracking: Tracking | None = None,
) -> int:
    """One (dataset, method) of the grid: seed 0 at every learning rate, then the other seeds at
    the chosen one; finished runs are skipped, and so are runs that failed before unless
    ``retry_failed``. A run that fails now is appended to ``failed`` as ``(run, error)`` (raised
    when ``failed`` is None) and the unit goes on. Returns the number of runs trained. With
    ``tracking``, each run (a finished one too, from its files) is logged to its MLflow store."""
    from pmtrec_lab.train import train

    trained = 0
    seed0 = spec.seeds[0]
    plan = [(lr, seed0) for lr in unit_lrs(spec, dataset, method)]
    for phase in (0, 1):
        if phase == 1:
            lr = choose_lr(out, dataset, method, spec)
            if lr is None:
                break
            plan = [(lr, s) for s in spec.seeds if s != seed0]
        for lr, seed in plan:
            rd = run_path(out, spec, dataset, method, lr, seed)
            if (rd / "status.json").is_file() and load_run(rd).finished:
                if tracking is not None:  # logged from its files, unless logged before
                    with tracked(tracking, rd, _tracked_name(out, rd)):
                        pass
                continue
            label = run_label(dataset, method, lr, seed)
            before = None if retry_failed else give_up_reason(rd)
            if before is not None:
                print(f"[compare] {label}: failed before ({before}); --retry-failed retries it")
                if failed is not None:
                    failed.append((label, before))
                continue
            if max_runs is not None and trained >= max_runs:
                return trained
            warn_renamed(out, spec, dataset, method, lr, seed)
            cfg = run_config(spec, dataset, method, lr, seed, data_dir)
            t0 = time.perf_counter()
            try:
                with tracked(tracking, rd, _tracked_name(out, rd)) as on_epoch:
                    train(cfg, rd, dataset=dataset_for_config(cfg.data), on_epoch=on_epoch)
            except Exception as exc:  # recorded failed by train(); the unit goes on
                if failed is None:
                    raise
                reason = failed_reason(rd) or f"{type(exc).__name__}: {exc}"
                failed.append((label, reason))
                print(f"[compare] {label}: failed: {reason}", flush=True)
                continue
            trained += 1
            print(
                f"[compare] {dataset} {method} lr={lr:g} seed={seed}: {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    return trained


def _tracked_name(out: Path, run_dir: Path) -> str:
    """The MLflow run's name: the run folder under the grid's ``runs/`` (``lastfm/ew/lr0.001-seed0``)."""
    try:
        return str(run_dir.resolve().relative_to((out / "runs").resolve()))
    except ValueError:
        return run_dir.name


def track_finished(spec: GridSpec, out: Path, tracking: Tracking) -> None:
    """Log the grid's runs from their files (``tracking.RunTracker``: what is logged already is
    not logged again): the remote grid's runs, whose epochs were trained on other machines."""
    for dataset in spec.datasets:
        for method in spec.methods:
            for lr in unit_lrs(spec, dataset, method):
                for seed in spec.seeds:
                    rd = run_path(out, spec, dataset, method, lr, seed)
                    if (rd / "metrics.json").is_file():
                        with tracked(tracking, rd, _tracked_name(out, rd)):
                            pass
