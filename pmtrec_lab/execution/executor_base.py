"""The local executors and their interface (``executors`` adds Ray and the choice by name):
``Executor``, ``SequentialExecutor`` (this process) and ``ProcessExecutor`` (worker processes).
See ``executors`` for the contract every executor keeps."""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import ClassVar, TypeVar

from pmtrec_lab.errors import ConfigError

__all__ = ["Executor", "ProcessExecutor", "SequentialExecutor"]

T = TypeVar("T")
R = TypeVar("R")


class Executor(ABC):
    """Runs independent units of work: ``run(fn, items) -> [fn(item) for item in items]``."""

    name: ClassVar[str]
    #: True when a run's files come back to the driver (no shared filesystem): the grid then
    #: submits runs, not units (``RayExecutor``)
    returns_artefacts: ClassVar[bool] = False

    @abstractmethod
    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Call ``fn`` on every item; results in the items' order."""

    def __enter__(self) -> Executor:
        """Start what ``submit`` needs (a Ray connection); nothing for the local executors."""
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[[T], R], item: T) -> Future:
        """``fn(item)`` as a future (here: run now, in this process; ``RayExecutor``: a Ray task)."""
        future: Future = Future()
        try:
            future.set_result(fn(item))
        except Exception as exc:
            future.set_exception(exc)
        return future


class SequentialExecutor(Executor):
    """One unit after another in this process (the default; what ``--jobs 1`` means)."""

    name = "sequential"

    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]


class ProcessExecutor(Executor):
    """``jobs`` spawned worker processes, each with ``threads`` torch threads (default: this
    process's threads split between the workers, at least one). Spawned, not forked: no torch or
    OpenMP state is copied into the workers."""

    name = "process"

    def __init__(self, jobs: int, threads: int | None = None):
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise ConfigError(f"compare --jobs: expected a positive number of worker processes, got {jobs!r}")
        self.jobs = jobs
        self.threads = threads

    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        import torch

        threads = self.threads or max(1, torch.get_num_threads() // self.jobs)
        ctx = multiprocessing.get_context("spawn")
        results: list[R | None] = [None] * len(items)
        with ProcessPoolExecutor(
            self.jobs, mp_context=ctx, initializer=torch.set_num_threads, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return results  # type: ignore[return-value]
