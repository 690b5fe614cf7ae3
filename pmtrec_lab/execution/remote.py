"""One grid run as a self-contained task for a remote worker (a Ray task): train into a
temporary folder on the worker's own disk, return the artefacts (``artefacts.RunArtefacts``).

A run that raises comes back as artefacts with its one-line ``error`` (its folder says
``failed``): the grid records it and the other runs go on. A run whose worker process is lost
(killed, out of memory, node gone) returns nothing; Ray retries it (``max_retries``) and the
retry trains from epoch 0, since the lost worker's checkpoints died with its disk.

Test-only switch: ``RunJob.crash_once`` makes the run kill its own worker process on its first
attempt (``os._exit``), found through Ray's cluster key-value store so that a retry on any node
knows it is not the first; the grid's tests use it to check the retry.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmtrec_lab.execution.artefacts import RunArtefacts, pack_run

__all__ = ["CRASH_ONCE_ENV", "RunJob", "remote_config", "train_remote"]

#: test-only: ``PMTREC_TEST_CRASH_ONCE=<method label>[,<label>...]`` sets ``crash_once`` on those
#: methods' runs (read by the driver, so it works through ``compare --address``)
CRASH_ONCE_ENV = "PMTREC_TEST_CRASH_ONCE"


@dataclass(frozen=True)
class RunJob:
    """One run: its resolved configuration (``RunConfig.to_dict()``), a label for messages and the
    run's key (``dataset/method/run name``), the torch threads to use, and the test switch."""

    config: dict[str, Any]
    label: str
    key: str
    threads: int = 1
    crash_once: bool = False


def remote_config(cfg: Any) -> dict[str, Any]:
    """``cfg`` (a ``RunConfig``) as a dictionary for a worker that does not share the driver's
    working directory: a relative ``data.data_dir`` (``--data-dir ../shared/datasets``) is made
    absolute against the driver's, since a Ray worker runs in a folder of its own and would look
    for the data under it. An absolute directory, or none (the worker's own ``PMTREC_DATA_DIR``
    then its default), is passed as it is."""
    config = cfg.to_dict()
    data_dir = config.get("data", {}).get("data_dir")
    if data_dir and not Path(data_dir).expanduser().is_absolute():
        config["data"]["data_dir"] = str(Path(data_dir).expanduser().resolve())
    return config


def _first_attempt(key: str) -> bool:
    """True the first time any worker asks about ``key`` in this Ray job (the cluster's KV store)."""
    import ray
    from ray.experimental import internal_kv

    name = f"pmtrec-lab/crash-once/{ray.get_runtime_context().get_job_id()}/{key}"
    already = internal_kv._internal_kv_put(name, b"1", overwrite=False)
    return not already


def train_remote(job: RunJob) -> RunArtefacts:
    """Train ``job`` in a temporary folder and return its files (the error instead of raising)."""
    import torch

    from pmtrec_lab.config import RunConfig
    from pmtrec_lab.train import train
    from pmtrec_lab.train.trainer import _reason

    t0 = time.perf_counter()
    if job.crash_once and _first_attempt(job.key):
        print(f"[compare] {job.label}: test switch: killing this worker on the first attempt", flush=True)
        os._exit(17)
    torch.set_num_threads(job.threads)
    error = None
    with tempfile.TemporaryDirectory(prefix="pmtrec-run-") as tmp:
        run_dir = Path(tmp) / "run"
        t1 = time.perf_counter()
        try:
            train(RunConfig.model_validate(job.config), run_dir)
        except Exception as exc:  # recorded as the run's failure; the grid goes on
            error = _reason(exc)
        t2 = time.perf_counter()
        files = pack_run(run_dir)
    return RunArtefacts(
        files=files,
        error=error,
        seconds=time.perf_counter() - t0,
        train_seconds=t2 - t1,
        host=socket.gethostname(),
    )
