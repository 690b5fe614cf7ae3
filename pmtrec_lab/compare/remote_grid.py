"""Running a grid run by run on an executor whose workers share no filesystem with the driver
(``Executor.returns_artefacts``: Ray), through ``execution.dispatch``.

A (dataset, method) starts with seed 0 at each of its learning rates; as soon as all of them have
finished, the rate seed 0's validation NDCG@20 chose (``layout.choose_lr``) is submitted for the
other seeds, while other units keep running. Finished runs are never redone, so an interrupted
grid resumes at the granularity of finished runs (a run cut short restarts at epoch 0: its
checkpoints were on the worker's disk). ``RunsFailedError`` is raised at the end when any run
failed.
"""

from __future__ import annotations

import os
from pathlib import Path

from pmtrec_lab.compare.layout import choose_lr, give_up_reason, run_label, run_path, warn_renamed
from pmtrec_lab.compare.spec import GridSpec, run_config, unit_lrs
from pmtrec_lab.execution.dispatch import RemoteDispatcher, RemoteRun, RunTiming, finished
from pmtrec_lab.execution.executor_base import Executor
from pmtrec_lab.execution.remote import CRASH_ONCE_ENV, RunJob, remote_config

__all__ = ["run_grid_remote"]


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
    driver = RemoteDispatcher(executor)
    started: set[tuple[str, str]] = set()

    def submit(dataset: str, method: str, lr: float, seed: int) -> None:
        rd = run_path(out, spec, dataset, method, lr, seed)
        if finished(rd):
            return
        label = run_label(dataset, method, lr, seed)
        before = None if retry_failed else give_up_reason(rd)
        if before is not None:
            driver.failed_before(label, before)
            return
        warn_renamed(out, spec, dataset, method, lr, seed)
        cfg = run_config(spec, dataset, method, lr, seed, data_dir)
        job = RunJob(remote_config(cfg), label, f"{dataset}/{method}/{rd.name}", threads, method in crash)

        def lost_record() -> tuple[str, str]:
            lost = run_config(spec, dataset, method, lr, seed, job.config["data"]["data_dir"])
            return lost.to_yaml(), lost.eval.metric

        driver.submit(RemoteRun(job, rd, lost_record, (dataset, method)))

    def second_phase(dataset: str, method: str) -> None:
        if (dataset, method) in started:
            return
        lr = choose_lr(out, dataset, method, spec)
        if lr is None:
            return
        started.add((dataset, method))
        for seed in spec.seeds[1:]:
            submit(dataset, method, lr, seed)

    with executor:
        for dataset in spec.datasets:
            for method in spec.methods:
                for lr in unit_lrs(spec, dataset, method):
                    submit(dataset, method, lr, spec.seeds[0])
                second_phase(dataset, method)
        driver.drain(lambda run: second_phase(*run.tag))
    return driver.result()
