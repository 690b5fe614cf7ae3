"""Executors: how a grid's independent units of work run (in this process, in worker processes,
or as Ray tasks on a cluster: ``ray_executor``). One interface, so a new executor is one more class.

An executor calls ``fn(item)`` for every item and returns the results in the items' order. For
``ProcessExecutor`` and ``RayExecutor`` both ``fn`` and the items must be picklable (module-level
functions, dataclasses, plain values). A unit that raises stops the local executors: the units
not started are cancelled, those running finish, and the first error propagates (the grid is
resumable, so a rerun picks up where it stopped). An executor whose workers share no filesystem
with the driver (``returns_artefacts``: Ray) is given runs instead of units, one ``submit`` each,
and returns their files (``grid.run_grid``).
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, ClassVar, TypeVar

from pmtrec_lab.errors import ConfigError

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "RayExecutor", "SequentialExecutor", "make_executor"]

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


from pmtrec_lab.compare.ray_executor import RayExecutor  # noqa: E402 (it subclasses Executor)

#: executor name -> class (``compare --executor NAME``)
EXECUTORS: dict[str, type[Executor]] = {
    e.name: e for e in (SequentialExecutor, ProcessExecutor, RayExecutor)
}


def make_executor(name: str | None = None, jobs: int = 1, **ray_options: Any) -> Executor:
    """The executor ``name`` (``None``: ``ray`` when any of ``ray_options`` is given, else
    ``process`` when ``jobs > 1``, else ``sequential``). ``ray_options`` (``address``,
    ``resources``, ``max_retries``, ``node_ip_address``, ``object_store_memory``) go to
    ``RayExecutor``; with another executor a given one is refused."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"compare --jobs: expected a positive number of worker processes, got {jobs!r}")
    given = {k: v for k, v in ray_options.items() if v is not None}
    if name is None:
        name = "ray" if given else "process" if jobs > 1 else "sequential"
    if name not in EXECUTORS:
        raise ConfigError(f"compare --executor: unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    if name != "ray" and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"compare: {flags} only apply to --executor ray (got --executor {name})")
    if name == "ray":
        if jobs != 1:
            raise ConfigError(
                f"compare: --jobs {jobs} sizes the process executor; with --executor ray every run is a "
                "Ray task and --resources-per-run sizes it"
            )
        return RayExecutor(**given)
    if name == "sequential":
        if jobs != 1:
            raise ConfigError(f"compare: --executor sequential runs one unit at a time; got --jobs {jobs}")
        return SequentialExecutor()
    return ProcessExecutor(jobs)
