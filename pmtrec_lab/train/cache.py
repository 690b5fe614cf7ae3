"""Runs keyed by their configuration, so notebooks, widgets and comparisons reuse finished runs.

``cached_run(cfg)`` trains into ``<runs-root>/<dataset>-<method>-<hash>`` or returns the finished
run there (an unfinished one is resumed). The root is ``PMTREC_RUNS_DIR`` or ``<cache>/runs``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from pmtrec_lab.config import RunConfig
from pmtrec_lab.paths import cache_dir
from pmtrec_lab.train.run import Run


def runs_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("PMTREC_RUNS_DIR")
    return Path(env) if env else cache_dir() / "runs"


def config_key(cfg: RunConfig) -> str:
    """A short hash of everything that changes a run's result (progress display excluded).

    The method's parameters enter resolved (``cfg.method.resolved``: defaults < preset < given,
    resolved when the configuration loaded), so ``pmtrec`` with no parameters and ``pmtrec`` with
    its defaults spelled out share one run."""
    plain = cfg.model_copy(update={"progress": "none"}).to_dict()
    plain["method"]["params"] = cfg.method.resolved_dict()
    payload = yaml.safe_dump(plain, sort_keys=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def run_dir_for(cfg: RunConfig, root: str | os.PathLike | None = None) -> Path:
    """The cached run's folder: named by the configuration and by the data's fingerprint, so a
    changed data file (or a data folder's new task declarations) never brings back a run trained
    on the old data."""
    from pmtrec_lab.data.loading import identity_for_config

    data = identity_for_config(cfg.data).fingerprint[:8]
    return runs_root(root) / f"{cfg.data.name}-{cfg.method.name}-{config_key(cfg)}-{data}"


def cached_run(cfg: RunConfig, root: str | os.PathLike | None = None, **train_kwargs) -> Run:
    """Train ``cfg`` (or reuse/resume its run) in the run directory its configuration names."""
    from pmtrec_lab.train.trainer import train

    return train(cfg, run_dir_for(cfg, root), **train_kwargs)
