"""``pmtrec-lab tune``: equal-budget hyper-parameter search of a grid's methods with Ray Tune
(Optuna's TPE sampler, the ASHA scheduler), and its outputs for ``compare --tuned``.

Modules, one job each: ``space`` (search-space files, checked against the methods' typed
parameters), ``trial`` (one trial: a run reporting validation NDCG@20 every epoch), ``study``
(the Tune study per (dataset, method) with an equal budget), ``output`` (``best.yaml``,
``trials.csv``, reading them back), ``cli``. Ray is imported only when a study runs.
"""

from __future__ import annotations

from pmtrec_lab.tune.output import grid_trials, load_trials, read_best, tuning_curves, with_tuned
from pmtrec_lab.tune.space import SearchSpace, find_space_file, load_space, split_sample

__all__ = [
    "SearchSpace",
    "find_space_file",
    "grid_trials",
    "load_space",
    "load_trials",
    "read_best",
    "split_sample",
    "tuning_curves",
    "with_tuned",
]
