"""Training: the per-entity multi-task step, the loop, run directories and diagnostics."""

from pmtrec_lab.train.cache import cached_run, config_key, run_dir_for
from pmtrec_lab.train.run import Run, load_diagnostics, load_run
from pmtrec_lab.train.trainer import Model, build_model, evaluate_run, train

__all__ = [
    "Model",
    "Run",
    "build_model",
    "cached_run",
    "config_key",
    "evaluate_run",
    "load_diagnostics",
    "load_run",
    "run_dir_for",
    "train",
]
