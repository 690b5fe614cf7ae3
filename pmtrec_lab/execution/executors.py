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

from typing import Any

from pmtrec_lab.errors import ConfigError
from pmtrec_lab.execution.executor_base import Executor, ProcessExecutor, SequentialExecutor
from pmtrec_lab.execution.ray_executor import RayExecutor

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "RayExecutor", "SequentialExecutor", "make_executor"]

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
