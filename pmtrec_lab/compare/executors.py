"""Executors: how a grid's independent units of work run (in this process, in worker processes,
and later on a cluster). One interface, so a new executor is one more class.

An executor calls ``fn(item)`` for every item and returns the results in the items' order. For
``ProcessExecutor`` both ``fn`` and the items must be picklable (module-level functions,
dataclasses, plain values). A unit that raises stops the executor: the units not started are
cancelled, those running finish, and the first error propagates (the grid is resumable, so a
rerun picks up where it stopped).
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import ClassVar, TypeVar

from pmtrec_lab.errors import ConfigError

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "SequentialExecutor", "make_executor"]

T = TypeVar("T")
R = TypeVar("R")


class Executor(ABC):
    """Runs independent units of work: ``run(fn, items) -> [fn(item) for item in items]``."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Call ``fn`` on every item; results in the items' order."""


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


#: executor name -> class (``compare --executor NAME``)
EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (SequentialExecutor, ProcessExecutor)}


def make_executor(name: str | None = None, jobs: int = 1) -> Executor:
    """The executor ``name`` (``None``: ``process`` when ``jobs > 1``, else ``sequential``)."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"compare --jobs: expected a positive number of worker processes, got {jobs!r}")
    if name is None:
        name = "process" if jobs > 1 else "sequential"
    if name not in EXECUTORS:
        raise ConfigError(f"compare --executor: unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    if name == "sequential":
        if jobs != 1:
            raise ConfigError(f"compare: --executor sequential runs one unit at a time; got --jobs {jobs}")
        return SequentialExecutor()
    return ProcessExecutor(jobs)
