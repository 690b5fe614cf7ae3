"""The Ray executor: every item a Ray task with declared resources, on a local Ray instance or a
cluster (``compare --executor ray [--address ADDR] [--resources-per-run cpu=1,gpu=0.25]``).

Ray is imported when the executor starts (``with RayExecutor(...) as ex``), never when this
module is: ``import pmtrec_lab`` and the other commands do not load it. A task lost with its
worker (the process died, the node left) is retried up to ``max_retries`` times (Ray's
``max_retries``; default 2); an exception raised by ``fn`` is not retried (it would fail the
same way). The grid sends runs, not (dataset, method) units, through ``submit``: each run's
artefacts come back to the driver (``remote``, ``artefacts``), so the nodes share no
filesystem (``grid.run_grid``). ``run(fn, items)`` is the ``Executor`` interface: every item
runs, then the first error, if any, is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from typing import Any, TypeVar

from pmtrec_lab.errors import ConfigError
from pmtrec_lab.execution.executor_base import Executor
from pmtrec_lab.execution.resources import RunResources

__all__ = ["DEFAULT_MAX_RETRIES", "RayExecutor"]

T = TypeVar("T")
R = TypeVar("R")

#: retries of a task whose worker was lost (Ray's ``max_retries``)
DEFAULT_MAX_RETRIES = 2


def _apply(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    """What a Ray worker runs: ``fn(item)`` with the task's torch threads."""
    import torch

    torch.set_num_threads(threads)
    return fn(item)


class RayExecutor(Executor):
    """Items as Ray tasks, ``resources`` each, retried ``max_retries`` times after a worker loss.

    ``address`` None starts a local Ray instance sized to the machine (``ray_connect.connect``);
    ``object_store_memory`` (bytes) sizes that local instance's object store."""

    name = "ray"
    returns_artefacts = True

    def __init__(
        self,
        address: str | None = None,
        resources: RunResources | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        node_ip_address: str | None = None,
        object_store_memory: int | None = None,
    ):
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigError(f"compare --max-retries: expected a whole number >= 0, got {max_retries!r}")
        self.address = address
        self.resources = resources or RunResources()
        self.max_retries = max_retries
        self.node_ip_address = node_ip_address
        self.object_store_memory = object_store_memory
        self._remote = None
        self._owns_ray = False

    def __enter__(self) -> RayExecutor:
        import sys

        from pmtrec_lab.execution.ray_connect import connect

        self._owns_ray = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
        ray = connect(self.address, self.node_ip_address, self.object_store_memory)
        self._remote = ray.remote(_apply).options(
            max_retries=self.max_retries, retry_exceptions=False, **self.resources.ray_options()
        )
        return self

    def __exit__(self, *exc: object) -> None:
        from pmtrec_lab.execution.ray_connect import disconnect

        self._remote = None
        if self._owns_ray:
            disconnect()

    def submit(self, fn: Callable[[T], R], item: T) -> Future:
        """Start ``fn(item)`` as a Ray task; a ``concurrent.futures.Future`` of its result (a lost
        worker, after the retries, is the future's exception)."""
        if self._remote is None:
            raise RuntimeError("RayExecutor.submit outside 'with RayExecutor(...)'")
        return self._remote.remote(fn, item, self.resources.threads).future()

    def run(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        with self:
            futures = [self.submit(fn, item) for item in items]
            wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]
