"""One Ray Tune trial: a run of the unit's configuration with the sampled settings, reporting
validation NDCG@20 after every epoch (``train(on_epoch=...)``).

Each report carries ``valid_ndcg20`` (this epoch's; the last evaluated one when the epoch was
not evaluated), ``best_valid_ndcg20`` (the best so far: the trial's score, and what ASHA
compares) and ``epoch``. The trial trains in a temporary folder on its worker's disk and keeps
no checkpoint between trials, so no storage is shared; a trial that ASHA stops simply ends.
A trial whose configuration carries ``resume.REPLAY_KEY`` (a resumed unit's recorded trial)
reports the recorded sequence instead of training (``pmtrec_lab.tune.resume``).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmtrec_lab.tune.resume import REPLAY_KEY
from pmtrec_lab.tune.space import split_sample

__all__ = ["HISTORY_KEY", "REPORTED", "REPORT_KEYS", "SCORE", "TrialJob", "run_trial", "trial_config"]

#: the metric reported every epoch and the trial's score (the best so far)
REPORTED = "valid_ndcg20"
SCORE = "best_valid_ndcg20"
#: the keys of every report (what a resumed unit records and replays)
REPORT_KEYS = (REPORTED, SCORE, "epoch")
#: with ``TrialJob.report_history``: the epoch's ``history.json`` numbers under their MLflow keys
#: (``pmtrec_lab.tracking.epoch_metrics``), for the driver's tracking (``tune.tracking``)
HISTORY_KEY = "history"


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one (dataset, method) shares: the unit's run configuration
    (``RunConfig.to_dict()``, seed 0's, with ``optim.epochs`` = the budget's max epochs), the
    grid variant's method parameters the samples go over, the torch threads per trial, and the
    recorded reports of a resumed unit's finished trials by trial number (replayed, not trained),
    and whether each report also carries the epoch's history (``HISTORY_KEY``; with ``--track``:
    neither ASHA nor the sampler reads it)."""

    config: dict[str, Any]
    base_params: dict[str, Any]
    threads: int = 1
    replay: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    report_history: bool = False


def trial_config(job: TrialJob, sample: dict[str, Any]):
    """The ``RunConfig`` of one trial: the unit's, with the sampled optimizer settings and method
    parameters (over the variant's) merged in, validated (``RunConfig.updated``)."""
    from pmtrec_lab.config import RunConfig

    optim, params = split_sample(sample)
    merged = {**job.base_params}
    for key, value in params.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    base = RunConfig.model_validate(job.config)
    return base.updated({"optim": optim, "method": {"params": merged}})


def run_trial(sample: dict[str, Any], job: TrialJob) -> None:
    """The Ray Tune function trainable (``tune.with_parameters(run_trial, job=...)``)."""
    import torch
    from ray import tune

    from pmtrec_lab.tracking import epoch_metrics
    from pmtrec_lab.train import train

    number = sample.get(REPLAY_KEY)
    if number is not None:
        for record in job.replay[number]:  # instantly: ASHA and TPE see what they saw before
            tune.report(dict(record))
        return
    torch.set_num_threads(job.threads)
    cfg = trial_config(job, {k: v for k, v in sample.items() if k != REPLAY_KEY})
    metric = f"valid/{cfg.eval.metric}"
    state = {"best": -math.inf, "last": float("nan")}

    def report(record: dict[str, Any]) -> None:
        value = record.get(metric)
        if value is not None:
            state["last"] = float(value)
            state["best"] = max(state["best"], float(value))
        best = state["best"] if state["best"] > -math.inf else float("nan")
        report = {REPORTED: state["last"], SCORE: best, "epoch": int(record["epoch"])}
        if job.report_history:
            report[HISTORY_KEY] = epoch_metrics(record)
        tune.report(report)

    with tempfile.TemporaryDirectory(prefix="pmtrec-trial-") as tmp:
        train(cfg, Path(tmp) / "run", on_epoch=report)
