"""``pmtrec-lab tune``: equal-budget hyper-parameter search of a grid's methods with Ray Tune
(Optuna's TPE sampler, the ASHA scheduler), and its outputs for ``compare --tuned``.

Modules, one job each: ``space`` (search-space files, checked against the methods' typed
parameters), ``trial`` (one trial: a run reporting validation NDCG@20 every epoch), ``study``
(the Tune study per (dataset, method) with an equal budget), ``resume`` (an interrupted unit's
finished trials, recorded and replayed on a rerun), ``output`` (``best.yaml``, ``trials.csv``,
reading them back), ``cli``. Ray is imported only when a study runs.
"""

from __future__ import annotations

from pmtrec_lab.lazy import lazy_exports

_EXPORTS = {
    "grid_trials": "output",
    "load_trials": "output",
    "read_best": "output",
    "tuning_curves": "output",
    "with_tuned": "output",
    "SearchSpace": "space",
    "find_space_file": "space",
    "load_space": "space",
    "split_sample": "space",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


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
