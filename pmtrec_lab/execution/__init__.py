"""Run execution: how independent units and runs are executed, below ``compare`` and ``tune``
(which both sit on it; it imports neither).

Modules, one job each: ``executor_base`` (the ``Executor`` interface, in-process and worker
processes), ``ray_executor`` (Ray tasks), ``executors`` (choosing one by name), ``resources``
(``--resources-per-run``), ``remote`` (one run as a self-contained task), ``artefacts`` (a run's
files, packed on the worker and written by the driver), ``dispatch`` (the driver of remote runs),
``ray_connect`` (connecting to Ray). Ray is imported only when a Ray executor or study starts.
"""

from __future__ import annotations

from pmtrec_lab.lazy import lazy_exports

_EXPORTS = {
    "RunArtefacts": "artefacts",
    "RemoteDispatcher": "dispatch",
    "RemoteRun": "dispatch",
    "RunTiming": "dispatch",
    "EXECUTORS": "executors",
    "Executor": "executors",
    "ProcessExecutor": "executors",
    "RayExecutor": "executors",
    "SequentialExecutor": "executors",
    "make_executor": "executors",
    "RunJob": "remote",
    "remote_config": "remote",
    "RunResources": "resources",
    "parse_resources": "resources",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
