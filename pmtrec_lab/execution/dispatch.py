"""Driving runs on an executor whose workers share no filesystem with the driver
(``Executor.returns_artefacts``: Ray).

Every run is one task (``remote.train_remote``) whose artefacts come back to the driver, which
writes the run folder (``artefacts.write_run``). What to run and when (a grid's seed-0 runs, then
the other seeds at the chosen rate) is the caller's: ``compare.remote_grid.run_grid_remote``
submits ``RemoteRun`` s to a ``RemoteDispatcher`` and is told as each one comes back.

Faults: a run that raises is recorded failed (its folder's ``status.json`` holds the error; the
grid's progress table lists it) and the other runs finish; a run whose worker was lost more often
than the retries allow is recorded failed the same way. ``RunsFailedError`` is raised at the
end when any run failed, so the command exits non-zero. The terminal shows finished / running /
failed counts after each run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmtrec_lab.errors import RunsFailedError
from pmtrec_lab.execution.artefacts import RunArtefacts, write_failed_run, write_run
from pmtrec_lab.execution.executor_base import Executor
from pmtrec_lab.execution.remote import RunJob, train_remote
from pmtrec_lab.train.run import load_run

__all__ = ["RemoteDispatcher", "RemoteRun", "RunTiming", "RunsFailedError", "finished"]


@dataclass
class RunTiming:
    """One run's round trip as the driver saw it, and its time inside the worker."""

    key: str
    round_trip: float
    worker_seconds: float
    train_seconds: float
    host: str


@dataclass
class RemoteRun:
    """One run to submit: its job, the driver's folder for it, ``lost_record()`` (the resolved
    configuration as YAML and the metric, written to the folder when the worker is lost) and the
    caller's ``tag`` (given back when the run returns)."""

    job: RunJob
    run_dir: Path
    lost_record: Callable[[], tuple[str, str]]
    tag: Any = None
    submitted: float = field(default_factory=time.perf_counter)


def finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (never resubmitted)."""
    return (run_dir / "status.json").is_file() and load_run(run_dir).finished


class RemoteDispatcher:
    """The driver's bookkeeping: what runs, what finished or failed, per-run timings."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self.running: dict[Future, RemoteRun] = {}
        self.trained = 0
        self.failed: list[tuple[str, str]] = []
        self.timings: list[RunTiming] = []

    def failed_before(self, label: str, reason: str) -> None:
        """A run that failed in an earlier call and is left alone: counted failed."""
        self.failed.append((label, reason))
        print(f"[compare] {label}: failed before ({reason}); --retry-failed retries it", flush=True)

    def submit(self, run: RemoteRun) -> None:
        self.running[self.executor.submit(train_remote, run.job)] = run

    def drain(self, returned: Callable[[RemoteRun], None]) -> None:
        """Wait for every run (``returned(run)`` after each is recorded may submit more)."""
        self.report()
        while self.running:
            done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
            for future in done:
                run = self.running.pop(future)
                self._record(run, future)
                returned(run)
            self.report()

    def result(self) -> tuple[int, list[RunTiming]]:
        """The number of runs trained and their timings; ``RunsFailedError`` when any run failed."""
        if self.failed:
            raise RunsFailedError(self.failed, self.trained)
        return self.trained, self.timings

    def _record(self, run: RemoteRun, future: Future) -> None:
        """Write a returned run's folder, or mark it failed (it raised, or its worker was lost)."""
        try:
            art: RunArtefacts = future.result()
        except Exception as exc:  # the worker was lost every time it was tried
            error = f"worker lost ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
            config_yaml, metric = run.lost_record()
            write_failed_run(run.run_dir, config_yaml, error, metric)
            self.failed.append((run.job.label, error))
            print(f"[compare] {run.job.label}: failed: {error}", flush=True)
            return
        write_run(art, run.run_dir)
        round_trip = time.perf_counter() - run.submitted
        self.timings.append(RunTiming(run.job.key, round_trip, art.seconds, art.train_seconds, art.host))
        if art.failed:
            self.failed.append((run.job.label, art.error or "failed"))
            print(f"[compare] {run.job.label}: failed: {art.error}", flush=True)
            return
        self.trained += 1
        print(f"[compare] {run.job.label}: {art.train_seconds:.0f}s on {art.host}", flush=True)

    def report(self) -> None:
        print(
            f"[compare] runs: {self.trained} finished, {len(self.running)} running, "
            f"{len(self.failed)} failed",
            flush=True,
        )
