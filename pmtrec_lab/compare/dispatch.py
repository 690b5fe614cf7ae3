"""Running a grid run by run on an executor whose workers share no filesystem with the driver
(``Executor.returns_artefacts``: Ray).

Every run is one task (``remote.train_remote``) whose artefacts come back to the driver, which
writes the run folder (``artefacts.write_run``). A (dataset, method) starts with seed 0 at each of
its learning rates; as soon as all of them have finished, the rate seed 0's validation NDCG@20
chose (``layout.choose_lr``) is submitted for the other seeds, while other units keep running.
Finished runs are never redone, so an interrupted grid resumes at the granularity of finished
runs (a run cut short restarts at epoch 0: its checkpoints were on the worker's disk).

Faults: a run that raises is recorded failed (its folder's ``status.json`` holds the error; the
grid's progress table lists it) and the other runs finish; a run whose worker was lost more often
than the retries allow is recorded failed the same way. ``RunsFailedError`` is raised at the
end when any run failed, so the command exits non-zero. The terminal shows finished / running /
failed counts after each run.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from pmtrec_lab.compare.artefacts import RunArtefacts, write_failed_run, write_run
from pmtrec_lab.compare.executors import Executor
from pmtrec_lab.compare.layout import choose_lr, give_up_reason, run_label, run_path, warn_renamed
from pmtrec_lab.compare.remote import CRASH_ONCE_ENV, RunJob, remote_config, train_remote
from pmtrec_lab.compare.spec import GridSpec, run_config, unit_lrs
from pmtrec_lab.errors import PmtrecError
from pmtrec_lab.train.run import load_run

__all__ = ["RunTiming", "RunsFailedError", "run_grid_remote"]


class RunsFailedError(PmtrecError):
    """Some runs of the grid failed (the others finished); ``failed`` lists ``(run, error)``."""

    def __init__(self, failed: list[tuple[str, str]], trained: int):
        self.failed = failed
        self.trained = trained
        first, error = failed[0]
        others = [run for run, _ in failed[1:]]
        more = ""
        if others:
            more = f"; also failed: {', '.join(others[:5])}" + (" ..." if len(others) > 5 else "")
        super().__init__(
            f"compare: {len(failed)} run(s) failed, the others finished: {first}: {error}{more}; see the "
            "progress table (progress.csv, summary.md); rerun with --retry-failed to retry them"
        )


@dataclass
class RunTiming:
    """One run's round trip as the driver saw it, and its time inside the worker."""

    key: str
    round_trip: float
    worker_seconds: float
    train_seconds: float
    host: str


@dataclass
class _Run:
    dataset: str
    method: str
    lr: float
    seed: int
    job: RunJob
    submitted: float = 0.0


@dataclass
class _State:
    """The driver's bookkeeping: what runs, what finished or failed, per-run timings."""

    running: dict[Future, _Run] = field(default_factory=dict)
    trained: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    second_phase: set[tuple[str, str]] = field(default_factory=set)
    timings: list[RunTiming] = field(default_factory=list)


def _finished(rd: Path) -> bool:
    return (rd / "status.json").is_file() and load_run(rd).finished


def _crash_once_methods() -> set[str]:
    return {m.strip() for m in os.environ.get(CRASH_ONCE_ENV, "").split(",") if m.strip()}


def run_grid_remote(
    spec: GridSpec,
    out: Path,
    data_dir: str | None,
    executor: Executor,
    threads: int = 1,
    retry_failed: bool = False,
) -> tuple[int, list[RunTiming]]:
    """Run (or resume) every run of the grid as a remote task; returns the number of runs trained
    and their timings. A run that failed in an earlier call is left alone (and counted failed)
    unless ``retry_failed``. Raises ``RunsFailedError`` at the end when any run failed."""
    crash = _crash_once_methods()
    state = _State()

    def submit(dataset: str, method: str, lr: float, seed: int) -> None:
        rd = run_path(out, spec, dataset, method, lr, seed)
        if _finished(rd):
            return
        label = run_label(dataset, method, lr, seed)
        before = None if retry_failed else give_up_reason(rd)
        if before is not None:
            state.failed.append((label, before))
            print(f"[compare] {label}: failed before ({before}); --retry-failed retries it", flush=True)
            return
        warn_renamed(out, spec, dataset, method, lr, seed)
        cfg = run_config(spec, dataset, method, lr, seed, data_dir)
        job = RunJob(remote_config(cfg), label, f"{dataset}/{method}/{rd.name}", threads, method in crash)
        run = _Run(dataset, method, lr, seed, job, time.perf_counter())
        state.running[executor.submit(train_remote, job)] = run

    def second_phase(dataset: str, method: str) -> None:
        if (dataset, method) in state.second_phase:
            return
        lr = choose_lr(out, dataset, method, spec)
        if lr is None:
            return
        state.second_phase.add((dataset, method))
        for seed in spec.seeds[1:]:
            submit(dataset, method, lr, seed)

    with executor:
        for dataset in spec.datasets:
            for method in spec.methods:
                for lr in unit_lrs(spec, dataset, method):
                    submit(dataset, method, lr, spec.seeds[0])
                second_phase(dataset, method)
        _report(state)
        while state.running:
            done, _ = wait(list(state.running), return_when=FIRST_COMPLETED)
            for future in done:
                run = state.running.pop(future)
                _record(out, spec, run, future, state)
                second_phase(run.dataset, run.method)
            _report(state)
    if state.failed:
        raise RunsFailedError(state.failed, state.trained)
    return state.trained, state.timings


def _record(out: Path, spec: GridSpec, run: _Run, future: Future, state: _State) -> None:
    """Write a returned run's folder, or mark it failed (it raised, or its worker was lost)."""
    rd = run_path(out, spec, run.dataset, run.method, run.lr, run.seed)
    try:
        art: RunArtefacts = future.result()
    except Exception as exc:  # the worker was lost every time it was tried
        error = f"worker lost ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        cfg = run_config(spec, run.dataset, run.method, run.lr, run.seed, run.job.config["data"]["data_dir"])
        write_failed_run(rd, cfg.to_yaml(), error, cfg.eval.metric)
        state.failed.append((run.job.label, error))
        print(f"[compare] {run.job.label}: failed: {error}", flush=True)
        return
    write_run(art, rd)
    round_trip = time.perf_counter() - run.submitted
    state.timings.append(RunTiming(run.job.key, round_trip, art.seconds, art.train_seconds, art.host))
    if art.failed:
        state.failed.append((run.job.label, art.error or "failed"))
        print(f"[compare] {run.job.label}: failed: {art.error}", flush=True)
        return
    state.trained += 1
    print(f"[compare] {run.job.label}: {art.train_seconds:.0f}s on {art.host}", flush=True)


def _report(state: _State) -> None:
    print(
        f"[compare] runs: {state.trained} finished, {len(state.running)} running, "
        f"{len(state.failed)} failed",
        flush=True,
    )
