"""A tuning study with an equal budget for every method: Ray Tune, Optuna's TPE sampler (seeded;
Bergstra et al., NeurIPS 2011, "Algorithms for Hyper-Parameter Optimization") through
``ray.tune.search.optuna``, and the ASHA scheduler (Li et al., MLSys 2020, "A System for
Massively Parallel Hyperparameter Tuning").

Per (dataset, method) of the grid: ``trials`` trials of at most ``max_epochs`` epochs each (the
budget, ``trials x max_epochs``, the same for every method and recorded in ``study.yaml``), seed
0 of the grid (``seeds[0]``), the grid's base configuration. A trial reports validation NDCG@20
every epoch (``trial``); its score is its best validation NDCG@20 at any epoch, which is also
what ASHA compares at each rung (``grace_period`` epochs, then x ``reduction_factor``). Trials
keep no checkpoints (nothing is shared between nodes but Ray's own messages). The chosen
configuration is the best-scoring trial (``output``). Units whose ``best.yaml`` exists with the
same budget are skipped, so a study resumes per (dataset, method); within a unit, the trials that
finished before an interruption are replayed from ``trials.partial.jsonl`` (``resume``).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pmtrec_lab.compare.spec import GridSpec, method_of, run_config
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.execution.remote import remote_config
from pmtrec_lab.execution.resources import RunResources
from pmtrec_lab.paths import write_text_atomic
from pmtrec_lab.tracking import Tracking
from pmtrec_lab.tune.output import BEST_FILE, SCORE_COLUMN, STUDY_FILE, best_from_trials, unit_dir, write_unit
from pmtrec_lab.tune.resume import (
    PARTIAL_FILE,
    REPLAY_KEY,
    Journal,
    StudyInterrupted,
    read_partial,
    replaying_searcher,
)
from pmtrec_lab.tune.space import SearchSpace, find_space_file, load_space, split_sample
from pmtrec_lab.tune.tracking import UnitTracker, tracking_callback
from pmtrec_lab.tune.trial import REPORT_KEYS, REPORTED, SCORE, TrialJob, run_trial, trial_config

__all__ = ["Budget", "check_budget", "load_spaces", "run_study", "tune_unit"]


@dataclass(frozen=True)
class Budget:
    """What every method gets: ``trials`` trials of at most ``max_epochs`` epochs, TPE seeded with
    ``searcher_seed``, ASHA with ``grace_period`` and ``reduction_factor``, ``concurrent`` trials
    at a time (1: the sequence of trials is reproducible)."""

    trials: int
    max_epochs: int
    searcher_seed: int = 0
    grace_period: int = 1
    reduction_factor: int = 2
    concurrent: int = 1

    def __post_init__(self) -> None:
        for name in ("trials", "max_epochs", "grace_period", "concurrent"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                flag = name.replace("_", "-")
                raise ConfigError(f"tune --{flag}: expected a whole number >= 1, got {value!r}")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 2:
            raise ConfigError(
                f"tune --reduction-factor: expected a whole number >= 2, got {self.reduction_factor!r}"
            )
        if self.grace_period > self.max_epochs:
            raise ConfigError(
                f"tune --grace-period {self.grace_period}: longer than --max-epochs {self.max_epochs}"
            )

    def record(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "epochs_budget": self.trials * self.max_epochs,
            "searcher": "optuna TPESampler (ray.tune.search.optuna.OptunaSearch)",
            "scheduler": "ASHA (ray.tune.schedulers.ASHAScheduler), time_attr=training_iteration",
            "score": "best validation NDCG@20 at any epoch",
        }


def load_spaces(spec: GridSpec, spaces: Path) -> dict[tuple[str, str], SearchSpace]:
    """Every (dataset, method)'s search space, checked before Ray starts."""
    out = {}
    for dataset in spec.datasets:
        for method in spec.methods:
            name, params = method_of(spec, method)
            out[(dataset, method)] = load_space(find_space_file(spaces, dataset, method), name, params)
    return out


def check_budget(out: Path, budget: Budget, spec: GridSpec) -> None:
    """Write ``study.yaml``, or refuse when ``out`` holds a study with another budget (the
    methods of one study must get equal budgets)."""
    path = out / STUDY_FILE
    record = {"budget": budget.record(), "seed": spec.seeds[0], "base": spec.base}
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        if old.get("budget") != record["budget"] or old.get("base") != record["base"]:
            raise ConfigError(
                f"tune --out {out}: holds a study with another budget or base configuration ({path}); "
                "every method of a study gets the same budget: use another --out"
            )
    write_text_atomic(path, yaml.safe_dump(record, sort_keys=False))


def _ray_domain(tune: Any, d: Any) -> Any:
    if d.kind == "uniform":
        return tune.uniform(*d.values)
    if d.kind == "loguniform":
        return tune.loguniform(*d.values)
    if d.kind == "int":
        return tune.randint(d.values[0], d.values[1] + 1)  # Ray's upper bound is exclusive
    if d.kind == "choice":
        return tune.choice(list(d.values))
    return d.values[0]


def _scheduler(budget: Budget) -> Any:
    """ASHA that remembers which trials it stopped before ``max_epochs`` (``stopped_early``)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingASHA(ASHAScheduler):
        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.stopped_early: set[str] = set()

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result.get("training_iteration", 0) < budget.max_epochs:
                self.stopped_early.add(trial.trial_id)
            return decision

    return RecordingASHA(
        time_attr="training_iteration",
        max_t=budget.max_epochs,
        grace_period=budget.grace_period,
        reduction_factor=budget.reduction_factor,
    )


def _recorder(journal: Journal, scheduler: Any) -> Any:
    """A Tune callback keeping every trial's reports on the driver (no storage is read back), and
    handing each finished trial to ``journal`` (the partial file of a resumable unit)."""
    from ray.tune import Callback

    class Recorder(Callback):
        def __init__(self) -> None:
            self.order: list[str] = []
            self.configs: dict[str, dict[str, Any]] = {}
            self.results: dict[str, list[dict[str, Any]]] = {}
            self.errors: dict[str, str] = {}
            self.ended: set[str] = set()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if trial.trial_id not in self.configs:
                self.order.append(trial.trial_id)
                self.configs[trial.trial_id] = dict(trial.config)

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            self.results.setdefault(trial.trial_id, []).append(
                {k: result.get(k) for k in (REPORTED, SCORE, "epoch", "training_iteration")}
            )

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            # after ASHA's decision on the last result (Tune's stop_trial): stopped_early is known
            tid = trial.trial_id
            self.ended.add(tid)
            reports = [{k: r.get(k) for k in REPORT_KEYS} for r in self.results.get(tid, [])]
            journal.trial_finished(tid, reports, tid in scheduler.stopped_early)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            text = str(getattr(trial, "error_file", "") or "")
            self.errors[trial.trial_id] = f"trial failed ({text})" if text else "trial failed"
            self.ended.add(trial.trial_id)

    return Recorder()


def _trials_table(space: SearchSpace, recorder: Any, stopped: set[str], max_epochs: int) -> pd.DataFrame:
    rows = []
    for number, tid in enumerate(recorder.order, start=1):
        results = recorder.results.get(tid, [])
        scores = [r[SCORE] for r in results if r.get(SCORE) is not None and not math.isnan(r[SCORE])]
        best = max(scores) if scores else float("nan")
        best_epoch = next((r["epoch"] for r in results if r.get(REPORTED) == best), None) if scores else None
        row: dict[str, Any] = {"trial": number, "trial_id": tid}
        row.update({k: recorder.configs[tid].get(k) for k in space.keys()})
        row.update(
            {
                "epochs_run": len(results),
                SCORE_COLUMN: best,
                "best_epoch": best_epoch,
                "stopped_early": tid in stopped,
                "status": "error" if tid in recorder.errors else "finished",
                "error": recorder.errors.get(tid, ""),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def tune_unit(
    spec: GridSpec,
    dataset: str,
    method: str,
    space: SearchSpace,
    budget: Budget,
    out: Path,
    data_dir: str | None = None,
    resources: RunResources | None = None,
    max_retries: int = 2,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Tune one (dataset, method) on an already connected Ray; write ``trials.csv`` and
    ``best.yaml``; return the best configuration (``best.yaml``'s content). The trials recorded
    in the unit's partial file by an interrupted run are replayed (``resume``); a study that ends
    before all its trials did raises ``StudyInterrupted`` and writes neither file. ``tracking``
    also logs the unit and its trials to MLflow (``tune.tracking``); it changes no result."""
    resources = resources or RunResources()
    base_cfg = run_config(spec, dataset, method, spec.lrs[0], spec.seeds[0], data_dir)
    base_cfg = base_cfg.updated({"optim": {"epochs": budget.max_epochs}, "progress": "none"})
    _, variant_params = method_of(spec, method)
    journal = _journal(out, dataset, method, budget)
    job = TrialJob(
        remote_config(base_cfg), variant_params, resources.threads, journal.replays(), tracking is not None
    )
    scheduler = _scheduler(budget)
    callbacks = [_recorder(journal, scheduler)]
    tracker = _unit_tracker(tracking, out, dataset, method, budget, job, callbacks, scheduler)
    recorder = callbacks[0]
    t0 = time.perf_counter()
    try:
        _fit(f"{dataset}-{method}", space, budget, job, journal, scheduler, callbacks, resources, max_retries)
        journal.check()
        if len(recorder.ended) < budget.trials:
            kept = f"its {len(journal.recorded)} finished trials are kept in {journal.path}: rerun to resume"
            raise StudyInterrupted(
                f"tune {dataset} {method}: the study ended after {len(recorder.ended)} of {budget.trials} "
                f"trials; " + (kept if journal.path else "rerun to start the unit over")
            )
        trials = _trials_table(space, recorder, scheduler.stopped_early, budget.max_epochs)
        best = _best_record(dataset, method, space, budget, trials, base_cfg, variant_params, spec.seeds[0])
        best["seconds"] = round(time.perf_counter() - t0, 1)
        write_unit(out, dataset, method, trials, best)
    except BaseException as exc:
        if tracker is not None:
            failed = isinstance(exc, Exception) and not isinstance(exc, StudyInterrupted)
            tracker.unit_ended(None, status="FAILED" if failed else "KILLED")
        raise
    if journal.path is not None:
        journal.path.unlink(missing_ok=True)  # best.yaml now marks the unit done
    if tracker is not None:
        tracker.unit_ended(best, trials)
    return best


def _unit_tracker(
    tracking: Tracking | None,
    out: Path,
    dataset: str,
    method: str,
    budget: Budget,
    job: TrialJob,
    callbacks: list[Any],
    scheduler: Any,
) -> UnitTracker | None:
    """With ``tracking``: the unit's MLflow record, started, its Tune callback added to
    ``callbacks``; None without."""
    if tracking is None:
        return None
    tracker = UnitTracker(
        tracking,
        unit_dir(out, dataset, method),
        dataset,
        method,
        budget.record(),
        config_of=lambda sample: trial_config(job, sample).to_dict(),
        replayed=lambda sample: REPLAY_KEY in sample,
        resuming=bool(job.replay),
    )
    tracker.start()
    callbacks.append(tracking_callback(tracker, scheduler, SCORE))
    return tracker


def _journal(out: Path, dataset: str, method: str, budget: Budget) -> Journal:
    """The unit's replay state: its partial file read back (``--concurrent 1`` only)."""
    if budget.concurrent != 1:
        return Journal(None)
    path = unit_dir(out, dataset, method) / PARTIAL_FILE
    journal = Journal(path, read_partial(path))
    if journal.recorded:
        print(
            f"[tune] {dataset} {method}: replaying {len(journal.recorded)} finished trials ({path})",
            flush=True,
        )
    return journal


def _fit(
    name: str,
    space: SearchSpace,
    budget: Budget,
    job: TrialJob,
    journal: Journal,
    scheduler: Any,
    callbacks: list[Any],
    resources: RunResources,
    max_retries: int,
) -> None:
    """Run the Tune study: seeded TPE (through ``journal``, which numbers and replays), ASHA."""
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    param_space = {d.key: _ray_domain(tune, d) for d in space.dimensions}
    sampler = optuna.samplers.TPESampler(seed=budget.searcher_seed)
    searcher = ConcurrencyLimiter(
        replaying_searcher(journal, metric=SCORE, mode="max", sampler=sampler),
        max_concurrent=budget.concurrent,
    )
    with tempfile.TemporaryDirectory(prefix="pmtrec-tune-") as storage:  # Tune's bookkeeping only
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(run_trial, job=job), {"cpu": resources.cpu, "gpu": resources.gpu}
            ),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=SCORE,
                mode="max",
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=budget.trials,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                verbose=0,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=max_retries),
            ),
        )
        tuner.fit()


def _best_record(
    dataset: str,
    method: str,
    space: SearchSpace,
    budget: Budget,
    trials: pd.DataFrame,
    base_cfg: Any,
    variant_params: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """``best.yaml``'s content (without ``seconds``): the best trial's settings over the variant's."""
    top = best_from_trials(trials)
    optim, params = split_sample({k: _plain(top[k]) for k in space.keys()})
    merged = {**variant_params}
    for key, value in params.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "dataset": dataset,
        "method": method,
        "trial": int(top["trial"]),
        "trial_id": str(top["trial_id"]),
        SCORE_COLUMN: float(top[SCORE_COLUMN]),
        "best_epoch": None if pd.isna(top["best_epoch"]) else int(top["best_epoch"]),
        "lr": float(optim.get("lr", base_cfg.optim.lr)),
        "weight_decay": float(optim.get("weight_decay", base_cfg.optim.weight_decay)),
        "params": merged,
        "sampled": {k: _plain(top[k]) for k in space.keys()},
        "seed": seed,
        "budget": budget.record(),
        "space_file": str(space.path),
    }


def _plain(value: Any) -> Any:
    """A pandas/numpy scalar as a plain Python value (for YAML)."""
    return value.item() if hasattr(value, "item") else value


def run_study(
    spec: GridSpec,
    spaces: Path,
    budget: Budget,
    out: Path,
    data_dir: str | None = None,
    address: str | None = None,
    resources: RunResources | None = None,
    max_retries: int = 2,
    tracking: Tracking | None = None,
) -> list[dict[str, Any]]:
    """Tune every (dataset, method) of the grid with the same budget (module docstring);
    units already tuned with this budget are skipped. Returns the units' best configurations.
    ``tracking``: also log every unit and trial to MLflow (``tune.tracking``)."""
    import sys

    from pmtrec_lab.execution.ray_connect import connect, disconnect

    loaded = load_spaces(spec, spaces)  # every file checked before Ray starts
    out.mkdir(parents=True, exist_ok=True)
    check_budget(out, budget, spec)
    owns = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    if tracking is not None:
        tracking.prepare()
    connect(address)
    try:
        return _run_units(spec, loaded, budget, out, data_dir, resources, max_retries, tracking)
    finally:
        if owns:
            disconnect()


def _run_units(
    spec: GridSpec,
    loaded: dict[tuple[str, str], SearchSpace],
    budget: Budget,
    out: Path,
    data_dir: str | None,
    resources: RunResources | None,
    max_retries: int,
    tracking: Tracking | None,
) -> list[dict[str, Any]]:
    chosen = []
    for (dataset, method), space in loaded.items():
        done = unit_dir(out, dataset, method) / BEST_FILE
        if done.is_file():
            print(f"[tune] {dataset} {method}: already tuned ({done})", flush=True)
            chosen.append(yaml.safe_load(done.read_text()))
            continue
        print(f"[tune] {dataset} {method}: {budget.trials} trials x {budget.max_epochs} epochs", flush=True)
        best = tune_unit(
            spec, dataset, method, space, budget, out, data_dir, resources, max_retries, tracking
        )
        print(
            f"[tune] {dataset} {method}: best trial {best['trial']} valid NDCG@20 "
            f"{best[SCORE_COLUMN]:.4f} ({best['seconds']:.0f}s)",
            flush=True,
        )
        chosen.append(best)
    return chosen
