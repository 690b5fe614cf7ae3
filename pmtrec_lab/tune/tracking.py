"""MLflow tracking of a tuning study's trials (``pmtrec-lab tune --track``), logged the way a
training run is (``pmtrec_lab.tracking``), from the driver.

One (dataset, method) unit becomes a parent MLflow run (``<dataset>/<method>``: the budget as
params; at the end the best trial, its score and the share of trials ASHA cut) and each trial a
child run (``mlflow.parentRunId``; ``<dataset>/<method> trial <n>``) with

- params: the trial's resolved configuration, flattened (``optim.lr``, ``method.params.tau``);
- metric histories at step = epoch: every number of the epoch's ``history.json`` record
  (``loss/<task>``, ``valid/ndcg_at_20``; the trial sends it with its report when tracking is on,
  ``TrialJob.report_history``) and ``tune/best_valid_ndcg_at_20``, the score ASHA compares;
- tags: ``pmtrec.trial`` (its number in start order, as in ``trials.csv``), ``pmtrec.trial_id``,
  and at its end ``pmtrec.stopped_early`` and ``pmtrec.epochs_run``; status FINISHED (ASHA's
  cut included: the trial ended as the study meant it to) or FAILED.

Logging from the driver (a Tune callback) rather than inside each trial: a trial that ASHA stops
is ended by Ray without running its own clean-up, so only the driver can close its MLflow run;
and one process writes the store. A trial whose worker was lost and that Ray retries (it starts
again from epoch 1) ends its child run FAILED and continues in a new child of the same number
(tag ``pmtrec.attempt``). A unit that stops before its end (interrupted, or failed) closes its
open trials KILLED. A resumed unit (one that replays finished trials) finds its parent run again
(tag ``pmtrec.unit_key``), marks the trials that were running when it was interrupted KILLED, and
logs nothing for the trials it replays (they were logged when they trained); a unit that starts
over supersedes its earlier parent (KILLED, its key tagged ``-superseded``) with a new one. As for
training runs, a store that cannot be written gives one warning and the study goes on unchanged.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pmtrec_lab.tracking import (
    Tracking,
    experiment_id,
    flat_params,
    guarded,
    log_in_batches,
    metric_key,
    store_client,
)
from pmtrec_lab.tune.trial import HISTORY_KEY

__all__ = ["SCORE_METRIC", "UnitTracker", "tracking_callback"]

#: the trial's score (best validation NDCG@20 so far) as an MLflow metric
SCORE_METRIC = "tune/best_valid_ndcg_at_20"
_PARENT = "mlflow.parentRunId"
_UNIT_KEY = "pmtrec.unit_key"


class UnitTracker:
    """The MLflow record of one tuning unit (module docstring). ``config_of`` maps a trial's
    sampled configuration to its resolved run configuration (a dict, ``RunConfig.to_dict()``);
    ``replayed`` tells a replayed trial's sample; ``resuming``: the unit replays finished trials, so
    its earlier parent run is continued. Every store call is guarded: the first failure is one
    warning and the tracker does nothing more."""

    def __init__(
        self,
        tracking: Tracking,
        unit_dir: Path,
        dataset: str,
        method: str,
        budget: Mapping[str, Any],
        config_of: Callable[[dict[str, Any]], dict[str, Any]],
        replayed: Callable[[dict[str, Any]], bool],
        resuming: bool = False,
    ):
        self.tracking = tracking
        self.unit_dir = Path(unit_dir).resolve()
        self.name = f"{dataset}/{method}"
        self.dataset, self.method = dataset, method
        self.budget = dict(budget)
        self.config_of = config_of
        self.replayed = replayed
        self.resuming = resuming
        self.parent_id: str | None = None
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id (trials this process logs)
        self.numbers: dict[str, int] = {}  # Ray trial id -> trial number (start order, from 1)
        self.epochs: dict[str, int] = {}
        self.ended: set[str] = set()  # Ray trial ids whose child run this tracker closed
        self.attempts: dict[str, int] = {}  # Ray trial id -> attempts so far (retries after a lost worker)
        self._client: Any = None
        self._experiment: str | None = None  # the MLflow experiment's id, found once in ``start``

    # -- guarded entry points --------------------------------------------------------------------
    def _guarded(self, action: Callable[[], None]) -> None:
        guarded(self.tracking.uri, action)

    def start(self) -> None:
        """Open (or find again) the unit's parent run; close trials an interruption left open."""
        self._guarded(self._start)

    def trial_started(self, trial_id: str, sample: Mapping[str, Any]) -> None:
        number = self.numbers.setdefault(trial_id, len(self.numbers) + 1)
        if trial_id in self.runs or trial_id in self.ended or self.replayed(dict(sample)):
            return
        self._guarded(lambda: self._open_trial(trial_id, number, dict(sample)))

    def trial_result(self, trial_id: str, result: Mapping[str, Any], score_key: str) -> None:
        run_id = self.runs.get(trial_id)
        if run_id is None:
            return
        self._guarded(lambda: self._log_result(run_id, trial_id, result, score_key))

    def trial_ended(self, trial_id: str, failed: bool, stopped_early: bool) -> None:
        run_id = self.runs.get(trial_id)
        if run_id is None:
            return
        self._guarded(lambda: self._end_trial(run_id, trial_id, failed, stopped_early))

    def trial_retried(self, trial_id: str) -> None:
        """Ray retries the trial from its start (its worker was lost): its child run ends FAILED
        and the next start opens a new one under the same trial number."""
        run_id = self.runs.pop(trial_id, None)
        self.attempts[trial_id] = self.attempts.get(trial_id, 1) + 1
        self.epochs.pop(trial_id, None)
        if run_id is not None:
            self._guarded(lambda: self._client.set_terminated(run_id, "FAILED"))

    def unit_ended(
        self, best: Mapping[str, Any] | None, trials: Any = None, status: str = "FINISHED"
    ) -> None:
        """The unit's end: ``best`` (``best.yaml``'s content) and ``trials`` (``trials.csv``'s
        frame) on success; ``status`` KILLED or FAILED when the study did not finish."""
        if self.parent_id is None:
            return
        self._guarded(lambda: self._end_unit(best, trials, status))

    # -- the store's side ----------------------------------------------------------------------
    def _unit_key(self) -> str:
        return hashlib.sha1(str(self.unit_dir).encode()).hexdigest()[:20]

    def _start(self) -> None:
        from mlflow.entities import Param

        client = self._client = store_client(self.tracking.uri)
        experiment = self._experiment = experiment_id(client, self.tracking.experiment, self.tracking.uri)
        found = client.search_runs(
            [experiment], filter_string=f"tags.`{_UNIT_KEY}` = '{self._unit_key()}'", max_results=1
        )
        if found and not self.resuming:  # the unit starts over: its earlier record is superseded
            from mlflow.entities import RunTag

            old = found[0].info
            client.log_batch(old.run_id, tags=[RunTag(_UNIT_KEY, f"{self._unit_key()}-superseded")])
            if old.status == "RUNNING":
                client.set_terminated(old.run_id, "KILLED")
            found = []
        if found:
            self.parent_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                client.update_run(self.parent_id, status="RUNNING")
            left_open = client.search_runs(
                [experiment],
                filter_string=f"tags.`{_PARENT}` = '{self.parent_id}' and attributes.status = 'RUNNING'",
            )
            for run in left_open:  # the trial that was training when the unit was interrupted
                client.set_terminated(run.info.run_id, "KILLED")
            return
        tags = {
            _UNIT_KEY: self._unit_key(),
            "pmtrec.run_dir": str(self.unit_dir),
            "pmtrec.dataset": self.dataset,
            "pmtrec.method": self.method,
            "pmtrec.kind": "tuning unit",
        }
        self.parent_id = client.create_run(experiment, run_name=self.name, tags=tags).info.run_id
        params = [Param(k, v) for k, v in flat_params({"budget": self.budget}).items()]
        client.log_batch(self.parent_id, params=params)

    def _open_trial(self, trial_id: str, number: int, sample: dict[str, Any]) -> None:
        from mlflow.entities import Param

        if self.parent_id is None:
            return
        client = self._client
        tags = {
            _PARENT: self.parent_id,
            "pmtrec.dataset": self.dataset,
            "pmtrec.method": self.method,
            "pmtrec.kind": "tuning trial",
            "pmtrec.trial": str(number),
            "pmtrec.trial_id": trial_id,
            "pmtrec.attempt": str(self.attempts.get(trial_id, 1)),
        }
        run_name = f"{self.name} trial {number}"
        run_id = client.create_run(self._experiment, run_name=run_name, tags=tags).info.run_id
        self.runs[trial_id] = run_id
        params = [Param(k, v) for k, v in flat_params(self.config_of(sample)).items()]
        log_in_batches(client, run_id, params=params)

    def _log_result(self, run_id: str, trial_id: str, result: Mapping[str, Any], score_key: str) -> None:
        from mlflow.entities import Metric

        epoch = int(result["epoch"])
        values = _history(result)
        score = result.get(score_key)
        if isinstance(score, float) and score == score:
            values[SCORE_METRIC] = score
        now = int(time.time() * 1000)
        log_in_batches(self._client, run_id, metrics=[Metric(k, v, now, epoch) for k, v in values.items()])
        self.epochs[trial_id] = epoch

    def _end_trial(self, run_id: str, trial_id: str, failed: bool, stopped_early: bool) -> None:
        from mlflow.entities import RunTag

        tags = [
            RunTag("pmtrec.stopped_early", str(stopped_early).lower()),
            RunTag("pmtrec.epochs_run", str(self.epochs.get(trial_id, 0))),
        ]
        self._client.log_batch(run_id, tags=tags)
        self._client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        self.runs.pop(trial_id, None)  # ended: a unit that stops later leaves it as it is
        self.ended.add(trial_id)

    def _end_unit(self, best: Mapping[str, Any] | None, trials: Any, status: str) -> None:
        from mlflow.entities import Metric, RunTag

        client = self._client
        if status != "FINISHED":  # trials still training when the unit stopped
            for run_id in self.runs.values():
                client.set_terminated(run_id, "KILLED")
            self.runs.clear()
        if best is not None:
            now = int(time.time() * 1000)
            metrics = [Metric(metric_key("best_valid_ndcg@20"), float(best["best_valid_ndcg@20"]), now, 0)]
            tags = [RunTag("pmtrec.best_trial", str(best["trial"]))]
            if trials is not None and len(trials):
                metrics.append(Metric("trials_stopped_early", float(trials["stopped_early"].sum()), now, 0))
            client.log_batch(self.parent_id, metrics=metrics, tags=tags)
        client.set_terminated(self.parent_id, status)


def _history(result: Mapping[str, Any]) -> dict[str, float]:
    """The epoch's metrics a trial sent with its report (``trial.HISTORY_KEY``; nested, or
    flattened to ``history/<key>`` by Tune)."""
    nested = result.get(HISTORY_KEY)
    if isinstance(nested, Mapping):
        return {str(k): float(v) for k, v in nested.items()}
    prefix = f"{HISTORY_KEY}/"
    return {k[len(prefix) :]: float(v) for k, v in result.items() if k.startswith(prefix)}


def tracking_callback(tracker: UnitTracker, scheduler: Any, score_key: str) -> Any:
    """A Ray Tune callback feeding ``tracker`` (``scheduler.stopped_early`` names ASHA's cuts)."""
    from ray.tune import Callback

    class TrialTracking(Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tracker.trial_started(trial.trial_id, trial.config)

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            tracker.trial_result(trial.trial_id, result, score_key)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tracker.trial_ended(trial.trial_id, False, trial.trial_id in scheduler.stopped_early)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tracker.trial_retried(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tracker.trial_ended(trial.trial_id, True, False)

    return TrialTracking()
