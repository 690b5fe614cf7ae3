"""Opt-in MLflow tracking of training runs: a copy of each run folder's record in an MLflow store,
so that ``mlflow ui`` can browse and overlay runs.

The run folder stays the source of truth. Tracking only reads what the trainer wrote: each
finished epoch's ``history.json`` record (through ``train``'s ``on_epoch``), then the run's
``config.yaml`` and ``metrics.json``. It never changes a result: nothing here touches the model,
the random streams or the run's files, and a store that cannot be written gives one warning line
naming it (once per store and process; tracking to it then stops) while the run goes on.

What one training run becomes: one MLflow run, in the experiment of its grid (the grid folder's
name) or in ``DEFAULT_EXPERIMENT`` for a single ``train``, with

- params: the resolved configuration, flattened (``method.params.tau``, ``optim.lr``, ...);
- metric histories (step = epoch, counted from 1 as in ``history.json``): every number of an
  epoch's record but ``epoch`` and ``seconds`` (``loss/<task>``, ``valid/<metric>``);
- final metrics: every number of ``metrics.json`` under ``final/`` (``final/test/ndcg_at_20``);
- tags: ``pmtrec.run_dir`` (the run folder's absolute path) and ``pmtrec.run_key`` (its hash,
  used to find the MLflow run again when the run resumes or a grid is tracked again).

MLflow allows no ``@`` in a key: it is written ``_at_`` (``valid/ndcg@20`` -> ``valid/ndcg_at_20``;
``metric_key``). Epochs already logged are not logged again, and a finished run trained without
tracking is logged from its files when a ``--track`` command meets it.

The store: ``--tracking-uri`` > ``PMTREC_TRACKING_URI`` > a SQLite file under the cache folder
(``default_store_uri``). ``mlflow`` is imported only when a run is tracked (it takes seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_EXPERIMENT",
    "ENV_URI",
    "RunTracker",
    "Tracking",
    "add_tracking_options",
    "default_store_uri",
    "experiment_id",
    "flat_params",
    "guarded",
    "log_in_batches",
    "metric_key",
    "store_client",
    "store_failed",
    "tracked",
    "tracking_from",
    "tracking_from_args",
]

log = logging.getLogger("pmtrec_lab.tracking")

#: the environment variable naming the store; set, it turns tracking on
ENV_URI = "PMTREC_TRACKING_URI"
#: the experiment of runs trained one at a time (``pmtrec-lab train``)
DEFAULT_EXPERIMENT = "pmtrec-lab train"
#: history keys that are no metric of the model: ``seconds`` differs between two identical runs
_NOT_METRICS = frozenset({"epoch", "seconds"})
_TAG_DIR, _TAG_KEY, _TAG_LOGGED = "pmtrec.run_dir", "pmtrec.run_key", "pmtrec.logged_epoch"
_TAG_FINAL = "pmtrec.final_logged"
_KEY_CHARS = re.compile(r"[^/\w.\- :]")
#: stores that failed in this process: warned about once, not tried again
_BROKEN: set[str] = set()


def default_store_uri() -> str:
    """``sqlite:///<cache>/mlflow/mlflow.db`` (``pmtrec_lab.paths.cache_dir``), the store
    ``mlflow ui --backend-store-uri`` opens."""
    from pmtrec_lab.paths import cache_dir

    return f"sqlite:///{cache_dir() / 'mlflow' / 'mlflow.db'}"


@dataclass(frozen=True)
class Tracking:
    """Where runs are tracked: the store's URI and the experiment's name. Plain strings, so that
    a grid's worker processes receive it pickled."""

    uri: str
    experiment: str = DEFAULT_EXPERIMENT

    def run(self, run_dir: str | Path, run_name: str | None = None) -> RunTracker:
        """The tracker of the training run in ``run_dir`` (a context manager; see ``RunTracker``)."""
        return RunTracker(self, Path(run_dir), run_name)

    def prepare(self) -> None:
        """Create the store and the experiment now, in this process: a grid's worker processes
        then share a store that exists instead of racing to create the SQLite file's tables."""
        guarded(self.uri, lambda: experiment_id(store_client(self.uri), self.experiment, self.uri))


def tracking_from(track: bool, uri: str | None, experiment: str = DEFAULT_EXPERIMENT) -> Tracking | None:
    """The command line's choice: None (off) unless ``track``, a ``uri`` or ``PMTREC_TRACKING_URI``
    is given; the store is ``uri`` > ``PMTREC_TRACKING_URI`` > ``default_store_uri()``."""
    env = os.environ.get(ENV_URI, "").strip()
    if not (track or uri or env):
        return None
    return Tracking(uri or env or default_store_uri(), experiment)


def add_tracking_options(parser: argparse.ArgumentParser, what: str = "the run") -> None:
    """``--track``, ``--tracking-uri`` and ``--experiment`` on a command's parser."""
    parser.add_argument(
        "--track",
        action="store_true",
        help=f"also log {what} to an MLflow store (default: a SQLite file under the cache folder; "
        f"{ENV_URI}, when set, names the store and turns tracking on); the run folders stay the "
        "source of truth",
    )
    parser.add_argument(
        "--tracking-uri", default=None, metavar="URI", help="the MLflow store (implies --track)"
    )
    parser.add_argument("--experiment", default=None, help="the MLflow experiment's name, with tracking")


def tracking_from_args(args: argparse.Namespace, default_experiment: str | None = None) -> Tracking | None:
    """What ``add_tracking_options``'s options ask for (``tracking_from``); None: tracking is off."""
    experiment = args.experiment or default_experiment or DEFAULT_EXPERIMENT
    return tracking_from(args.track, args.tracking_uri, experiment)


def metric_key(key: str) -> str:
    """A run file's key as an MLflow metric key: ``@`` -> ``_at_``, any other character MLflow
    refuses -> ``_`` (``valid/ndcg@20`` -> ``valid/ndcg_at_20``)."""
    return _KEY_CHARS.sub("_", key.replace("@", "_at_"))


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested configuration as MLflow params: ``{"method.params.tau": "0.5", ...}``. Leaves are
    written as JSON (``null``, ``true``, ``[10, 20]``) except strings; an empty section is ``{}``."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def _numbers(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """The finite numbers of a (nested) record as ``(key/path, value)``; booleans, text and
    ``null`` (a non-finite value in the run's JSON) are left out."""
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _numbers(value, f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            yield name, float(value)


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """One ``history.json`` record's metrics, under their MLflow keys (no ``epoch``, ``seconds``)."""
    return {metric_key(k): v for k, v in _numbers(record) if k not in _NOT_METRICS}


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``metrics.json``'s numbers under ``final/`` (``final/test/ndcg_at_20``, ``final/best_epoch``)."""
    return {metric_key(f"final/{k}"): v for k, v in _numbers(metrics) if k not in ("schema", "seconds")}


def guarded(uri: str, action: Callable[[], None]) -> None:
    """Run one store action unless the store failed before; its failure is ``store_failed``'s
    one warning, never an exception: tracking must not stop a run or a study."""
    if uri in _BROKEN:
        return
    try:
        action()
    except Exception as exc:
        store_failed(uri, exc)


def log_in_batches(client: Any, run_id: str, params: Sequence[Any] = (), metrics: Sequence[Any] = ()) -> None:
    """``params`` and ``metrics`` of one run in as many ``log_batch`` calls as MLflow's limits
    need (at most 100 params and 1000 metrics a batch)."""
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def store_client(uri: str) -> Any:
    """An ``MlflowClient`` of the store (imports mlflow: seconds, the first time)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # local and opt-in: nothing leaves
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _artifact_root(uri: str) -> str | None:
    """Beside a SQLite file, so that no ``mlruns`` folder appears in the working directory."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (beside a SQLite store: its artifacts) if new."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_root(uri))
    except Exception:  # another process created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def store_failed(uri: str, exc: BaseException) -> None:
    """The store cannot be written: one warning line naming it (once per store and process), and
    tracking to it stops (``guarded``)."""
    if uri not in _BROKEN:
        _BROKEN.add(uri)
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        log.warning(
            "MLflow tracking off: the store %s cannot be written (%s%s); the runs go on and their "
            "folders hold every result",
            uri,
            type(exc).__name__,
            f": {detail}" if detail else "",
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunTracker:
    """Copies one training run into the store: ``on_epoch`` is ``train``'s callback, and leaving
    the ``with`` block logs the epochs not yet logged (from ``history.json``: a run resumed, or
    finished before without tracking), ``metrics.json``'s final metrics and the run's end
    (FINISHED, FAILED, or KILLED when interrupted).

    ::

        with tracking.run(out) as tracker:
            train(cfg, out, on_epoch=tracker.on_epoch)

    Every store call is guarded: the first failure is one warning (``store_failed``), and the tracker
    does nothing more. The MLflow run is opened at the first epoch (``config.yaml`` is written by
    then), or at the end."""

    def __init__(self, tracking: Tracking, run_dir: Path, run_name: str | None = None):
        self.tracking = tracking
        self.run_dir = run_dir.resolve()
        self.run_name = run_name or self.run_dir.name
        self.run_id: str | None = None
        self.logged = 0  # the last epoch logged
        self.status: str | None = None  # the MLflow run's status as this tracker last saw or set it
        self.final_logged = False
        self._client: Any = None

    # -- the trainer's side --------------------------------------------------------------------
    def on_epoch(self, record: Mapping[str, Any]) -> None:
        """``train``'s ``on_epoch``: logs the epoch's losses and validation metrics at its epoch."""
        self._guarded(lambda: self._log_epoch(record))

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            status = "FINISHED"
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        self._guarded(lambda: self._end(status))

    # -- the store's side ----------------------------------------------------------------------
    def _guarded(self, action: Callable[[], None]) -> None:
        guarded(self.tracking.uri, action)

    def _run_key(self) -> str:
        return hashlib.sha1(str(self.run_dir).encode()).hexdigest()[:20]

    def _open(self, fresh: bool = False) -> None:
        """Find this folder's MLflow run (by ``pmtrec.run_key``) or create it with its params.
        ``fresh``: the run started over (its first epoch came again), so a new MLflow run."""
        from mlflow.entities import Param, RunTag

        client = self._client = self._client or store_client(self.tracking.uri)
        experiment = experiment_id(client, self.tracking.experiment, self.tracking.uri)
        if not fresh:
            found = client.search_runs(
                [experiment], filter_string=f"tags.`{_TAG_KEY}` = '{self._run_key()}'", max_results=1
            )
            if found:
                run = found[0]
                self.run_id = run.info.run_id
                self.logged = int(run.data.tags.get(_TAG_LOGGED, 0))
                self.final_logged = run.data.tags.get(_TAG_FINAL) == "1"
                self.status = run.info.status
                return
        if fresh and self.run_id is not None:  # the old record stays, no longer found as this folder's
            client.set_tag(self.run_id, _TAG_KEY, f"{self._run_key()}-superseded")
            if self.status == "RUNNING":
                client.set_terminated(self.run_id, "KILLED")
        tags = {_TAG_DIR: str(self.run_dir), _TAG_KEY: self._run_key(), _TAG_LOGGED: "0"}
        self.run_id = client.create_run(experiment, run_name=self.run_name, tags=tags).info.run_id
        self.logged, self.final_logged, self.status = 0, False, "RUNNING"
        config = _config(self.run_dir)
        log_in_batches(client, self.run_id, params=[Param(k, v) for k, v in flat_params(config).items()])
        client.log_batch(
            self.run_id, tags=[RunTag("pmtrec.dataset", str(config.get("data", {}).get("name")))]
        )

    def _log_epoch(self, record: Mapping[str, Any]) -> None:
        epoch = int(record["epoch"])
        if self.run_id is None:
            self._open()
        if epoch <= self.logged:  # the run started over in its folder (``--restart``, new config)
            self._open(fresh=True)
        if self.status != "RUNNING":  # resumed: it trains again
            self._client.update_run(self.run_id, status="RUNNING")
            self.status = "RUNNING"
        self._backfill(before=epoch)
        self._log_metrics({epoch: epoch_metrics(record)}, epoch)

    def _backfill(self, before: int | None = None) -> None:
        """Log ``history.json``'s epochs after the last logged one (and before ``before``)."""
        history = _read_json(self.run_dir / "history.json")
        if not isinstance(history, list):
            return
        missing = {
            int(r["epoch"]): epoch_metrics(r)
            for r in history
            if isinstance(r, dict) and self.logged < int(r.get("epoch", 0)) < (before or math.inf)
        }
        if missing:
            self._log_metrics(missing, max(missing))

    def _log_metrics(self, by_epoch: Mapping[int, Mapping[str, float]], last: int) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, epoch) for epoch, values in by_epoch.items() for k, v in values.items()]
        log_in_batches(self._client, self.run_id, metrics=metrics)
        self.logged = max(self.logged, last)
        self._client.log_batch(self.run_id, tags=[RunTag(_TAG_LOGGED, str(self.logged))])

    def _end(self, status: str) -> None:
        from mlflow.entities import Metric, RunTag

        metrics = _read_json(self.run_dir / "metrics.json")
        if self.run_id is None:
            if not (self.run_dir / "config.yaml").is_file():
                return  # nothing was trained: no run to show
            self._open()
        self._backfill()
        if status == "FINISHED" and isinstance(metrics, dict):
            if not self.final_logged:
                now = int(time.time() * 1000)
                final = [Metric(k, v, now, 0) for k, v in final_metrics(metrics).items()]
                log_in_batches(self._client, self.run_id, metrics=final)
                self._client.log_batch(self.run_id, tags=[RunTag(_TAG_FINAL, "1")])
                self.final_logged = True
        elif status == "FINISHED" and self._paused():
            status = "RUNNING"  # ``max_epochs_this_call``: it goes on in a later call
        if status != self.status:
            if status == "RUNNING":
                self._client.update_run(self.run_id, status=status)
            else:
                self._client.set_terminated(self.run_id, status)
            self.status = status

    def _paused(self) -> bool:
        status = _read_json(self.run_dir / "status.json")
        return isinstance(status, dict) and status.get("state") == "paused"


def _config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved configuration, as its ``config.yaml`` holds it (a record from before a
    setting existed with the value it trained with: ``load_run_config``)."""
    import yaml

    from pmtrec_lab.config import load_run_config
    from pmtrec_lab.errors import ConfigError

    try:
        return load_run_config(run_dir / "config.yaml").to_dict()
    except ConfigError:  # written by another version: logged as it is
        pass
    try:
        loaded = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


@contextmanager
def tracked(tracking: Tracking | None, run_dir: str | Path, run_name: str | None = None) -> Iterator[Any]:
    """``on_epoch`` for ``train`` while the block runs: a ``RunTracker``'s with ``tracking``, None
    (no callback) without."""
    if tracking is None:
        yield None
        return
    with tracking.run(run_dir, run_name) as tracker:
        yield tracker.on_epoch
