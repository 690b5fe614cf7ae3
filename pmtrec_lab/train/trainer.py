"""The training loop: epochs of per-entity multi-task steps, validation, early stopping,
checkpoints, resume, diagnostics and the final test evaluation.

``train`` checks the device and the folder, takes the folder's lock, decides with ``_plan``
(return a finished run as it is, resume, or start fresh), writes ``config.yaml`` and
``status.json``, then calls its steps in order: ``_setup`` (dataset, model, method, optimizer,
recorder: a ``_Session``), ``_resume`` (state from ``last.pt``, refused when the data changed),
``_run_epoch`` per epoch (``_train_steps``, ``_validate``, ``_save_progress``, which keeps
``status.json`` current) and ``_finish`` (test evaluation, ``metrics.json``). Any failure marks
the run ``failed`` with its reason.

Determinism: every epoch's sampling generator is seeded from (seed, epoch) and the method's from
(seed, epoch, 1), so a resumed run replays exactly what an uninterrupted run would have done.
A NaN/inf loss or gradient stops the run with an error naming the task and step; ``last.pt``
stays at the last good epoch.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pmtrec_lab.config import RunConfig, load_run_config
from pmtrec_lab.data import dataset_for_config
from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.encoders import build_encoder
from pmtrec_lab.errors import ConfigError, MissingDataError, PmtrecError
from pmtrec_lab.eval import evaluate_embeddings, group_metrics, user_groups
from pmtrec_lab.eval.beyond import (
    DEFAULT_TAIL_RATIO,
    BeyondAccuracy,
    item_group_metrics,
    item_popularity_groups,
)
from pmtrec_lab.mtl import META_SPLIT_NEEDS, Need, StepContext, WeightingMethod, build_method
from pmtrec_lab.paths import overwrite_in_place, write_text_atomic
from pmtrec_lab.tasks import Task, build_tasks, resolve_task_configs
from pmtrec_lab.tasks.link import bpr
from pmtrec_lab.tasks.meta import MetaBatch, MetaPairs
from pmtrec_lab.train.auxiliary import AuxiliaryEvaluator, flat_history
from pmtrec_lab.train.diagnostics import DiagnosticsRecorder, default_weight_epochs
from pmtrec_lab.train.level_selection import select_levels
from pmtrec_lab.train.lock import RunLock, lock_holder
from pmtrec_lab.train.optim import SparseDenseAdam, make_optimizer, uses_sparse_tables
from pmtrec_lab.train.run import (
    INTERRUPTED,
    RUN_SCHEMA,
    Run,
    RunFileError,
    check_checkpoint_run,
    is_damaged_run_folder,
    is_run_folder,
    json_text,
    load_checkpoint,
    load_model_state,
    load_run,
    make_status,
    read_json,
    run_schema,
    save_checkpoint,
    status_damage,
    write_json,
    write_parquet,
)
from pmtrec_lab.train.step import train_step

log = logging.getLogger("pmtrec_lab.train")


class Model(nn.Module):
    """The encoder and the task modules (whose heads hold parameters)."""

    def __init__(self, encoder: nn.Module, tasks: list[Task]):
        super().__init__()
        self.encoder = encoder
        self.tasks = nn.ModuleList(tasks)


def _epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    mixed = (seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def encoder_exclusions(cfg: RunConfig) -> set[str]:
    """Sources predicted by an active auxiliary task: left out of message passing unless split."""
    return {
        t.source
        for t in resolve_task_configs(cfg)
        if t.type != "rec" and t.source not in cfg.encoder.split_relations
    }


def build_model(cfg: RunConfig, ds: RecDataset) -> Model:
    """The encoder, then the tasks sized from its output width, from one ``torch.manual_seed``."""
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(
        cfg.encoder.name,
        ds,
        dim=cfg.encoder.dim,
        num_layers=cfg.encoder.num_layers,
        exclude=encoder_exclusions(cfg),
        split_relations=cfg.encoder.split_relations or None,
        split_seed=cfg.data.split_seed,
        propagation=cfg.encoder.propagation,
        sparse=uses_sparse_tables(cfg),
    )
    tasks = build_tasks(cfg, ds, encoder.out_dim)
    return Model(encoder, tasks)


def social_relation(ds: RecDataset) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    for rel in ds.relations.values():
        if rel.side == "user":
            return rel.src, rel.dst
    return None, None


@torch.no_grad()
def evaluate_split(
    model: Model,
    ds: RecDataset,
    cfg: RunConfig,
    which: str,
    device: torch.device,
    with_hits: bool = False,
    beyond: BeyondAccuracy | None = None,
):
    """Full-ranking evaluation on ``valid`` (training and meta items masked) or ``test``
    (training, meta and validation items masked); ``with_hits`` keeps the retrieved pairs for
    per-item metrics (the metrics do not change)."""
    model.eval()
    users, items = model.encoder()
    model.train()
    known = ds.split.observed_outside_evaluation()  # train, and the meta pairs when held out
    exclude = known if which == "valid" else [*known, ds.split.valid]
    relevant = ds.split.valid if which == "valid" else ds.split.test
    return evaluate_embeddings(
        users,
        items,
        exclude,
        relevant,
        ks=tuple(cfg.eval.ks),
        chunk_users=cfg.eval.chunk_users,
        device=device,
        with_hits=with_hits,
        beyond=beyond,
    )


@dataclass
class _Progress:
    """How training shows its progress: a per-epoch bar of steps ("bar"), the epoch lines ("log",
    printed with the bar too), or nothing. ``epochs`` is the run's maximum, shown in the bar."""

    mode: str
    epochs: int | None = None

    @classmethod
    def make(cls, setting: str, epochs: int | None = None) -> _Progress:
        if setting == "auto":
            setting = "bar" if "ipykernel" in sys.modules else "log"
        return cls(setting, epochs)

    def steps(self, n: int, epoch: int) -> Iterable[int]:
        """The ``n`` steps of the epoch whose 0-based index is ``epoch``, as a bar in "bar" mode.

        The bar names the epoch as the log lines and files do, counted from 1 ("epoch 1/15").
        """
        if self.mode == "bar":
            from tqdm.auto import tqdm

            total = f"/{self.epochs}" if self.epochs is not None else ""
            return tqdm(range(n), desc=f"epoch {epoch + 1}{total}", leave=False)
        return range(n)

    def epoch_line(self, text: str) -> None:
        if self.mode in ("log", "bar"):
            print(text, flush=True)


@dataclass
class _Session:
    """What one call of ``train`` works on: built by ``_setup``, restored by ``_resume``, advanced
    by ``_run_epoch``, closed by ``_finish``. The last five fields are the resumable progress (with
    the model, optimizer, method and recorder states they make up ``last.pt``)."""

    cfg: RunConfig
    out: Path
    ds: RecDataset
    device: torch.device
    model: Model
    tasks: list[Task]
    names: list[str]
    method: WeightingMethod
    optimizer: torch.optim.Optimizer | SparseDenseAdam  # SparseDenseAdam with optim.sparse
    recorder: DiagnosticsRecorder | None
    progress: _Progress
    steps_per_epoch: int
    status: _StatusWriter
    fingerprint: str  # the data's (``RecDataset.fingerprint``); "" when unknown
    #: what the method needs besides the task gradients (``_method_needs``, read once): the only
    #: thing the step loop branches on, so a new method adds no branch here
    needs: frozenset[Need] = frozenset()
    meta: MetaPairs | None = None  # the meta split, for a method with a need in ``META_SPLIT_NEEDS``
    meta_all: MetaBatch | None = None  # every meta pair with fixed negatives (``Need.META_LOSS``)
    #: the auxiliary tasks' held-out cases (``train.auxiliary``); None without ``data.aux_holdout``
    aux: AuxiliaryEvaluator | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the best validation so far: its epoch (counted from 1; None before the first evaluation)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "value": -float("inf"), "valid": {}})
    bad: int = 0  # evaluations in a row without a better validation metric
    start_epoch: int = 0  # the number of finished epochs, i.e. the 0-based index of the next
    global_step: int = 0

    def best_fields(self) -> dict[str, Any]:
        """``status.json``'s view of the best validation so far."""
        value = self.best["value"]
        return {"best_epoch": self.best["epoch"], "best_value": value if value != -float("inf") else None}


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = True,
    dataset: RecDataset | None = None,
    max_epochs_this_call: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    """Train (or resume, or return the finished run in ``out_dir``) and evaluate on test.

    ``max_epochs_this_call`` stops after that many epochs in this call, leaving a resumable run
    (state "paused"): a long run can be done over several sittings. ``on_epoch`` is called with
    each finished epoch's ``history.json`` record, after its files are written (Ray Tune's
    trials report validation NDCG@20 through it).

    Before anything is written: the device is checked, a non-empty ``out_dir`` that is not a run
    folder is refused, and ``out_dir/.lock`` is taken (one writer per folder). Then
    ``config.yaml`` and ``status.json`` are written, the dataset is built, and the run goes on;
    a failure of any kind marks it ``failed`` with the reason (the fixed command, rerun in the
    same folder, resumes it, or starts over when its configuration changed).
    """
    out = Path(out_dir)
    check_device(cfg.device)
    prepare_run_folder(out)
    with RunLock(out):
        plan = _plan(cfg, out, resume)
        if plan == "finished":
            return load_run(out)
        if plan == "fresh":
            clear_run_files(out)
        write_text_atomic(out / "config.yaml", resolved_config(cfg).to_yaml())
        status = _StatusWriter(out, cfg.eval.metric)
        status.write("running", epoch=_epochs_done(out) if plan == "resume" else 0)
        try:
            return _train_locked(cfg, out, plan == "resume", dataset, max_epochs_this_call, status, on_epoch)
        except BaseException as exc:
            reason = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else _reason(exc)
            status.write_final("failed", error=reason)
            raise


def _train_locked(
    cfg: RunConfig,
    out: Path,
    resume: bool,
    dataset: RecDataset | None,
    max_epochs_this_call: int | None,
    status: _StatusWriter,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    s = _setup(cfg, out, dataset, status)
    if resume:
        _resume(s)
        log.warning("%s: %s", out, _resume_notice(s))
    status.write("running", epoch=s.start_epoch, **s.best_fields())
    stop_reason = "early_stopping" if s.bad >= cfg.eval.patience else "max_epochs"
    done_this_call = 0
    for epoch in range(s.start_epoch, cfg.optim.epochs):
        if stop_reason == "early_stopping":  # a resumed run that had already stopped early
            break
        if max_epochs_this_call is not None and done_this_call >= max_epochs_this_call:
            status.write("paused", epoch=epoch, **s.best_fields())
            return load_run(out)
        done_this_call += 1
        stop = _run_epoch(s, epoch)
        if on_epoch is not None:
            on_epoch(dict(s.history[-1]))
        if stop:
            stop_reason = "early_stopping"
            break
    _finish(s, stop_reason)
    return load_run(out)


def _resume_notice(s: _Session) -> str:
    """What a resumed run says it does: from which epoch it goes on (a resumed run was silent)."""
    done, total = s.start_epoch, s.cfg.optim.epochs
    if s.bad >= s.cfg.eval.patience or done >= total:
        return f"resuming after epoch {done} of {total} (last.pt; training was over): the test evaluation"
    held = "epoch 1" if done == 1 else f"epochs 1-{done}"
    return f"resuming from epoch {done + 1} of {total} (last.pt holds {held})"


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """What a checkpoint records of the run that wrote it: the configuration, the progress display
    aside (it does not change a result; ``_plan`` compares configurations the same way). A
    checkpoint copied from another run is then named as such, with the settings that differ,
    instead of being loaded (same shapes) or blamed on changed data. The method's parameters are
    recorded resolved (:func:`resolved_config`), as ``config.yaml`` records them."""
    return resolved_config(cfg).model_copy(update={"progress": "none"}).to_dict()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if isinstance(exc, PmtrecError) and text else f"{type(exc).__name__}: {text}"


def check_device(device: str) -> None:
    """A ConfigError unless ``device`` names a device this machine has (checked before any file
    is written: ``device=cuda`` on a machine without one fails here, not after the data loads)."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device: {device!r} is not a torch device ({exc}); e.g. cpu, cuda:1") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} requested but CUDA is not available here; use device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {device!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {device!r} requested but MPS is not available here; use device=cpu")


def prepare_run_folder(out: Path) -> None:
    """Create ``out``; refuse it when it is a file, or a non-empty folder that is not a run folder
    (so ``--out`` at a folder of the user's own files never overwrites them). Hidden entries (the
    lock, temporary files) do not count."""
    if out.exists() and not out.is_dir():
        raise PmtrecError(f"--out {out} is a file, not a folder; choose a folder path")
    out.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if foreign and not is_run_folder(out) and not is_damaged_run_folder(out):
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise PmtrecError(
            f"--out {out} is not empty and is not a pmtrec-lab run folder (it holds {shown}); "
            "choose an empty or new folder"
        )


_RUN_FILES = (
    "best.pt",
    "last.pt",
    "metrics.json",
    "history.json",
    "status.json",
    "per_user_test.parquet",
    "per_user_valid.parquet",
    "per_item_test.parquet",
    "per_item_valid.parquet",
    "groups.json",
    "items.json",
    "level_selection.json",
)


def clear_run_files(out: Path) -> None:
    """Remove what an earlier run left, so nothing of it can be mistaken for the new run's."""
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)
    diag = out / "diagnostics"
    if diag.is_dir():
        for f in diag.glob("*.parquet"):
            f.unlink()


def _epochs_done(out: Path) -> int:
    path = out / "status.json"
    status = read_json(path) if path.is_file() and status_damage(path) is None else {}
    epoch = status.get("epoch") if isinstance(status, dict) and run_schema(status) == RUN_SCHEMA else None
    return epoch if isinstance(epoch, int) else 0


def resolved_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its method's parameters resolved (defaults < preset < given,
    ``cfg.method.resolved``): what a run folder's ``config.yaml`` records (so it says every
    parameter the run trained with, not ``params: {}``) and the form two configurations are
    compared in when deciding whether a folder holds the same run (so folders written before,
    with only the given parameters, still resume). The parameters are the configuration's own,
    resolved when it loaded (``cfg.method.resolved``); nothing is resolved again."""
    method = cfg.method.model_copy(update={"params": cfg.method.resolved_dict()})
    return cfg.model_copy(update={"method": method})


def _identity_yaml(cfg: RunConfig) -> str:
    """``cfg`` resolved and without its progress display, as YAML: the form in which two
    configurations are compared when deciding whether a folder holds the same run."""
    return resolved_config(cfg).model_copy(update={"progress": "none"}).to_yaml()


def _plan(cfg: RunConfig, out: Path, resume: bool) -> str:
    """What to do in ``out``: ``"finished"`` (return the run as it is), ``"resume"`` or ``"fresh"``.

    A folder holding another configuration's run is refused unless that run failed or never
    finished an epoch (then it starts over, with a notice): rerunning a corrected command in the
    folder of a failed run works, and a healthy run is never overwritten by a different one. A
    finished run counts as healthy without its ``last.pt`` (committed run folders keep none)."""
    if not resume or not (out / "config.yaml").is_file():
        return "fresh"
    status_path = out / "status.json"
    damage = status_damage(status_path)
    status = read_json(status_path) if damage is None and status_path.is_file() else {}
    state = status.get("state") if isinstance(status, dict) else None
    has_last = (out / "last.pt").is_file()
    # what may be replaced: a failed run, or one that never finished an epoch (a finished run's
    # metrics.json says it finished even when its status.json is damaged)
    finished = state == "finished" or (out / "metrics.json").is_file()
    replaceable = state == "failed" or (not finished and not has_last)
    # the progress display does not change a run's result
    try:
        previous = _identity_yaml(load_run_config(out / "config.yaml"))
    except ConfigError as exc:
        detail = _config_problem(exc, out / "config.yaml")
        if replaceable:
            log.warning("%s is unreadable (%s); starting over", out / "config.yaml", detail)
            return "fresh"
        raise RunFileError(
            out / "config.yaml",
            f"is unreadable ({detail})",
            hint="the run there cannot be checked against an unreadable configuration: rerun with "
            "--restart to start over, or use another --out",
        ) from None
    if previous != _identity_yaml(cfg):
        if replaceable:
            log.warning("%s: the earlier run there (%s) had another configuration; starting over", out, state)
            return "fresh"
        known = f"state {state!r}" if damage is None else f"its {status_path.name} is damaged"
        raise PmtrecError(
            f"{out} holds a run with a different configuration ({known}); use another --out, "
            "or --restart to replace it"
        )
    if state == "finished":
        recorded = status.get("data_fingerprint") if isinstance(status, dict) else None
        now = _changed_data(cfg, recorded)
        if now is not None:
            raise PmtrecError(
                f"{out}: this run finished on other data (data fingerprint {recorded}; the files now "
                f"give {now}), so its results are not this data's: rerun with "
                "--restart to train it on the current data, or use another --out"
            )
        return "finished"
    if damage is not None and has_last:
        log.warning("%s is damaged (%s); the run's progress is in last.pt", status_path, damage)
    return "resume" if has_last else "fresh"


def _config_problem(exc: ConfigError, path: Path) -> str:
    """``load_config``'s message about ``path`` without the path it starts with."""
    text = str(exc)
    for prefix in (f"config file {path}", f"invalid configuration in {path}"):
        if text.startswith(prefix):
            rest = text[len(prefix) :].lstrip(",: ")
            return ("invalid configuration: " if prefix.startswith("invalid") else "") + rest
    return text


def _changed_data(cfg: RunConfig, recorded: str | None) -> str | None:
    """The data fingerprint ``cfg``'s files give now when a run that recorded ``recorded`` trained
    on other data, else None (the fingerprint covers the files' contents and the settings that
    change the split; one of the older kind, the cache key, is recognised). Unknown (none
    recorded, or the files are missing so nothing can be compared) counts as the same data: the
    run is returned as it is."""
    from pmtrec_lab.data.loading import identity_for_config

    if not recorded:
        return None
    try:
        identity = identity_for_config(cfg.data)
    except (MissingDataError, FileNotFoundError):
        return None
    return None if identity.matches(recorded) else identity.fingerprint


class _StatusWriter:
    """Writes ``status.json``: the mark, state, progress, data fingerprint, pid, host and time."""

    def __init__(self, out: Path, metric: str):
        self.path = out / "status.json"
        self.metric = metric
        self.fields: dict[str, Any] = {}

    def write(self, state: str, **fields: Any) -> None:
        self.fields.update(fields)
        if state != "failed":
            self.fields.pop("error", None)
        write_json(self.path, make_status(state, metric=self.metric, **self.fields))

    def write_final(self, state: str, **fields: Any) -> None:
        """``write``, for the last word on a run that stops with an error: it must not be lost
        to the error itself. On a full disk the atomic write cannot create its temporary file
        (and ``status.json`` stayed ``running`` with a dead pid): then the file is written over
        in place (``paths.overwrite_in_place``). If that fails too, a warning says so and the
        run's own error is the one raised."""
        try:
            self.write(state, **fields)
        except OSError as exc:
            text = json_text(make_status(state, metric=self.metric, **self.fields))
            try:
                overwrite_in_place(self.path, text)
            except OSError as again:
                log.warning("%s could not be marked %s (%s; then %s)", self.path, state, exc, again)


def _setup(cfg: RunConfig, out: Path, dataset: RecDataset | None, status: _StatusWriter) -> _Session:
    """Build everything the configuration names: dataset, model, method, optimizer, recorder."""
    device = torch.device(cfg.device)
    ds = dataset or dataset_for_config(cfg.data)
    fingerprint = getattr(ds, "fingerprint", "") or ""
    status.fields["data_fingerprint"] = fingerprint or None
    model = build_model(cfg, ds).to(device)
    tasks: list[Task] = list(model.tasks)
    names = [t.name for t in tasks]
    method = build_method(cfg.method.name, len(tasks), cfg.method.resolved).to(device)
    needs = _method_needs(method)
    meta = None
    if needs & META_SPLIT_NEEDS:
        if not len(ds.split.meta):
            raise ConfigError(
                f"method {cfg.method.name!r} with these parameters reads the meta loss (PMTRec v3 "
                f"usefulness), but dataset {ds.name!r} has no meta split: set data.meta_split=true"
            )
        main = tasks[0]
        meta = MetaPairs(ds.split.meta, ds.num_users, ds.num_items, getattr(main, "observed", None))
    optimizer = make_optimizer(cfg, model, own_preconditioning=Need.OWN_PRECONDITIONING in needs)
    recorder = None
    if cfg.diagnostics.enabled:
        recorder = DiagnosticsRecorder(
            names,
            ds.num_users,
            ds.num_items,
            cfg.diagnostics.weight_epochs or default_weight_epochs(cfg.optim.epochs),
            cfg.diagnostics.max_entities,
            cfg.diagnostics.cosine_bins,
            cfg.seed,
        )
    return _Session(
        cfg=cfg,
        out=out,
        ds=ds,
        device=device,
        model=model,
        tasks=tasks,
        names=names,
        method=method,
        optimizer=optimizer,
        recorder=recorder,
        progress=_Progress.make(cfg.progress, cfg.optim.epochs),
        steps_per_epoch=tasks[0].steps_for_epoch(),  # the main task's epoch sets the steps
        status=status,
        fingerprint=fingerprint,
        needs=needs,
        meta=meta,
        meta_all=None if meta is None else meta.fixed_negatives(_epoch_generator(cfg.seed, 0, 3)),
        aux=AuxiliaryEvaluator.build(
            ds, tasks, [t.source for t in resolve_task_configs(cfg)], method.TRAINS_AUXILIARY
        ),
    )


def _method_needs(method: WeightingMethod) -> frozenset[Need]:
    """What ``method`` asks of the trainer (``WeightingMethod.needs``), read once for the run.

    A need this trainer does not serve is refused here, naming the method, rather than silently
    skipped; ``Need.META_LOSS`` also needs the method's ``meta_value_every``.
    """
    needs = frozenset(method.needs)
    unknown = sorted(str(n) for n in needs - set(Need))
    if unknown:
        raise PmtrecError(
            f"method {method.name!r} needs {', '.join(map(repr, unknown))}, which the trainer does not "
            f"provide (it provides {', '.join(repr(str(n)) for n in Need)})"
        )
    if Need.META_LOSS in needs and method.meta_value_every is None:
        raise PmtrecError(f"method {method.name!r} needs the meta loss but sets no meta_value_every")
    return needs


def _resume(s: _Session) -> None:
    """Restore the model, optimizer, method, diagnostics and progress from ``last.pt``, if any."""
    if not (s.out / "last.pt").is_file():
        return
    path = s.out / "last.pt"
    st = load_checkpoint(path)
    check_checkpoint_run(path, st, run_identity(s.cfg), _LAST_HINT)
    before = st.get("data_fingerprint") or ""
    if before and s.fingerprint and before != s.fingerprint and _changed_data(s.cfg, before) is not None:
        raise PmtrecError(
            f"{s.out}: the data changed since this run started (it trained on data fingerprint "
            f"{before}, the files now give {s.fingerprint}); rerun with --restart to train on the "
            "new data from the start, or restore the old files to resume"
        )
    load_model_state(s.model, st["model"], path, _LAST_HINT)
    s.optimizer.load_state_dict(st["optimizer"])
    s.method.load_state_dict(st["method"])
    s.history, s.best, s.bad = st["history"], st["best"], st["bad_epochs"]
    s.start_epoch, s.global_step = st["epoch"], st["step"]
    if s.recorder is not None and st.get("diagnostics"):
        s.recorder.load_state(st["diagnostics"])


#: what to do about a ``last.pt`` that is not this run's
_LAST_HINT = "rerun with --restart to start this run over, or put back its own last.pt"
#: what to do about a ``best.pt`` that is not this run's
_BEST_HINT = "retrain the run (train --restart into its folder), or put back its own best.pt"


def _run_epoch(s: _Session, epoch: int) -> bool:
    """Train one epoch, validate when due, checkpoint, report; True if early stopping is due."""
    cfg = s.cfg
    t0 = time.perf_counter()
    level_round = _level_round(s, epoch) if Need.LEVEL_SELECTION in s.needs else None
    mean_losses, last_beta = _train_steps(s, epoch)
    s.method.on_epoch_end(mean_losses, epoch)
    if s.recorder is not None:
        s.recorder.end_epoch(epoch + 1)
    number = epoch + 1  # epochs are counted from 1 in every file and message
    losses = {f"loss/{n}": float(v) for n, v in zip(s.names, mean_losses)}
    record: dict[str, Any] = {"epoch": number, **losses}
    is_eval = (epoch + 1) % cfg.eval.every == 0 or epoch == cfg.optim.epochs - 1
    if is_eval:
        record.update({f"valid/{k}": v for k, v in _validate(s, epoch).items()})
        if s.aux is not None:  # only with data.aux_holdout, so records read as before without it
            record.update(flat_history(s.aux.evaluate(s.model, "valid")))
    if last_beta is not None:
        record["beta"] = last_beta
    if level_round is not None:  # the round before this epoch: its cost and the levels it chose
        record["branch_epochs"] = level_round["branch_epochs"]
        record.update({f"level/{n}": v for n, v in level_round["levels"].items()})
    record["seconds"] = time.perf_counter() - t0
    s.history.append(record)
    _save_progress(s, epoch)
    losses_txt = " ".join(f"{n}={v:.4f}" for n, v in zip(s.names, mean_losses.tolist()))
    valid_txt = f" valid {cfg.eval.metric}={record[f'valid/{cfg.eval.metric}']:.4f}" if is_eval else ""
    s.progress.epoch_line(
        f"[{cfg.method.name}] epoch {number}/{cfg.optim.epochs} {losses_txt}{valid_txt} "
        f"({record['seconds']:.1f}s)"
    )
    return is_eval and s.bad >= cfg.eval.patience


def _level_round(s: _Session, epoch: int) -> dict[str, Any] | None:
    """The method's round of auxiliary-level selection due before ``epoch``, if any
    (``level_selection.select_levels``): branches train quietly (no progress, no diagnostics) and
    the rounds so far are written to ``level_selection.json``."""
    recorder, progress = s.recorder, s.progress
    s.recorder, s.progress = None, _Progress("none")

    def branch_epoch(e: int) -> None:
        mean_losses, _ = _train_steps(s, e)
        s.method.on_epoch_end(mean_losses, e)

    try:
        record = select_levels(s, epoch, branch_epoch)
    finally:
        s.recorder, s.progress = recorder, progress
    if record is not None:
        write_json(s.out / "level_selection.json", s.method.level_rounds)
        chosen = " ".join(f"{n}={v:g}" for n, v in record["levels"].items())
        s.progress.epoch_line(
            f"[{s.cfg.method.name}] levels before epoch {epoch + 1}: {chosen} "
            f"({record['branch_epochs']} branch epochs)"
        )
    return record


def _train_steps(s: _Session, epoch: int) -> tuple[torch.Tensor, float | None]:
    """The epoch's steps: (each task's mean loss [K], the method's last beta or None).

    Sampling draws from a generator seeded by (seed, epoch), the method from (seed, epoch, 1), the
    meta batch's negatives from (seed, epoch, 2), so a resumed run replays exactly what an
    uninterrupted one would have done.
    """
    gen = _epoch_generator(s.cfg.seed, epoch)
    ctx_gen = _epoch_generator(s.cfg.seed, epoch, 1)
    meta_gen = _epoch_generator(s.cfg.seed, epoch, 2)
    for t in s.tasks:
        t.start_epoch(s.steps_per_epoch, gen)
    loss_sum = torch.zeros(len(s.tasks), dtype=torch.float64)
    last_beta: float | None = None
    for _ in s.progress.steps(s.steps_per_epoch, epoch):
        batches = [t.next_batch(gen) for t in s.tasks]
        ctx = StepContext(
            step=s.global_step,
            epoch=epoch,
            steps_per_epoch=s.steps_per_epoch,
            task_names=s.names,
            generator=ctx_gen,
            num_entities=(s.ds.num_users, s.ds.num_items),
        )
        s.optimizer.zero_grad(set_to_none=True)
        if Need.META_LOSS in s.needs and s.global_step % s.method.meta_value_every == 0:
            assert s.meta_all is not None
            s.method.observe_meta_loss(meta_loss_on(s.model, s.meta_all), ctx)
        meta = None
        if Need.META_GRADIENTS in s.needs:
            assert s.meta is not None
            meta = s.meta.for_batches(batches, meta_gen)
        res = train_step(
            s.model.encoder,
            s.tasks,
            batches,
            s.method,
            ctx,
            s.cfg.optim.l2,
            s.device,
            meta=meta,
            analytic=s.cfg.optim.task_gradients == "analytic",
        )
        s.optimizer.step()
        if Need.LOSSES_AFTER in s.needs:
            s.method.after_step(_losses_after(s.model, s.tasks, batches, s.device), ctx)
        loss_sum += res.losses.double().cpu()
        if "beta" in res.result.diagnostics:
            last_beta = float(res.result.diagnostics["beta"])
        if s.recorder is not None:
            s.recorder.update(res, epoch + 1)
        s.global_step += 1
    return (loss_sum / s.steps_per_epoch).float(), last_beta


@torch.no_grad()
def meta_loss_on(model: Model, batch: MetaBatch) -> float:
    """The main task's BPR loss on ``batch`` (all meta pairs, fixed negatives) with the model's
    full representations, as evaluation computes them."""
    model.eval()
    users, items = model.encoder()
    model.train()
    dev = users.device
    value = bpr(users[batch.users.to(dev)], items[batch.pos.to(dev)], items[batch.neg.to(dev)])
    return float(value)


def _validate(s: _Session, epoch: int) -> dict[str, float]:
    """Validation metric means; keeps ``best.pt`` and the early-stopping count up to date."""
    result = evaluate_split(s.model, s.ds, s.cfg, "valid", s.device)
    if len(result.users) == 0:
        raise PmtrecError(
            f"dataset {s.ds.name!r}: no user has validation items, so nothing can be evaluated; "
            "lower data.k_core or use a dataset whose users have at least 3 interactions"
        )
    vm = result.means()
    metric = s.cfg.eval.metric
    if metric not in vm:
        raise PmtrecError(f"eval.metric {metric!r} not among {sorted(vm)}")
    if vm[metric] > s.best["value"]:
        s.best = {"epoch": epoch + 1, "value": vm[metric], "valid": vm}
        s.bad = 0
        best = {"model": s.model.state_dict(), "epoch": epoch + 1, "config": run_identity(s.cfg)}
        save_checkpoint(s.out / "best.pt", best)
    else:
        s.bad += 1
    return vm


def _save_progress(s: _Session, epoch: int) -> None:
    """``last.pt`` (everything ``_resume`` needs), ``history.json`` and the diagnostics."""
    state = {
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "method": s.method.state_dict(),
        "epoch": epoch + 1,  # epochs finished
        "step": s.global_step,
        "data_fingerprint": s.fingerprint,
        "history": s.history,
        "best": s.best,
        "bad_epochs": s.bad,
        "diagnostics": s.recorder.state() if s.recorder is not None else None,
        "config": run_identity(s.cfg),
    }
    save_checkpoint(s.out / "last.pt", state)
    write_json(s.out / "history.json", s.history)
    if s.recorder is not None:
        s.recorder.save(s.out / "diagnostics")
    s.status.write("running", epoch=epoch + 1, **s.best_fields())


@torch.no_grad()
def _losses_after(model: Model, tasks: list[Task], batches, device) -> torch.Tensor:
    from pmtrec_lab.train.step import layout_step

    lay = layout_step(batches, device)
    zu, zi = model.encoder.encode(lay.users, lay.items)
    return torch.stack([t.loss(zu, zi, lay.local[j], b) for j, (t, b) in enumerate(zip(tasks, batches))])


def _finish(s: _Session, stop_reason: str) -> None:
    """Test evaluation of the best checkpoint: per-user metrics, groups, ``metrics.json``, finished."""
    out, history, best = s.out, s.history, s.best
    if (out / "best.pt").is_file():
        best_state = load_checkpoint(out / "best.pt")
        check_checkpoint_run(out / "best.pt", best_state, run_identity(s.cfg), _BEST_HINT)
        load_model_state(s.model, best_state["model"], out / "best.pt", _BEST_HINT)
    popularity = np.bincount(s.ds.split.train[:, 1], minlength=s.ds.num_items)
    beyond = BeyondAccuracy(popularity, s.cfg.eval.ks)
    tres = evaluate_split(s.model, s.ds, s.cfg, "test", s.device, with_hits=True, beyond=beyond)
    vres = evaluate_split(s.model, s.ds, s.cfg, "valid", s.device, with_hits=True)
    src, dst = social_relation(s.ds)
    groups = user_groups(s.ds.split.train, s.ds.num_users, src, dst)
    per_item_test = None
    for split, result, relevant in (("test", tres, s.ds.split.test), ("valid", vres, s.ds.split.valid)):
        frame = result.to_frame().merge(groups, left_on="user", right_index=True, how="left")
        write_parquet(out / f"per_user_{split}.parquet", frame)
        per_item = _per_item_frame(result, relevant, s.cfg.eval.ks)
        write_parquet(out / f"per_item_{split}.parquet", per_item)
        per_item_test = per_item if split == "test" else per_item_test
    write_json(out / "groups.json", group_metrics(tres, groups))
    write_json(
        out / "items.json",
        {
            "schema": 1,
            "test": beyond.result(),
            "tail_ratio": DEFAULT_TAIL_RATIO,
            "groups": item_group_metrics(per_item_test, item_popularity_groups(popularity)),
        },
    )
    beta = None
    if history:
        best_rec = next((h for h in history if h["epoch"] == best["epoch"]), None)
        beta = best_rec.get("beta") if best_rec else None
    metrics = {
        "schema": RUN_SCHEMA,
        "best_epoch": best["epoch"],
        "valid": best["valid"],
        "test": tres.means(),
        "users_evaluated": int(len(tres.users)),
        "users_without_test_items": int(tres.num_users_without_relevant),
        "epochs_run": len(history),
        "stopped": stop_reason,
        "beta_at_best": beta,
        "seconds": float(sum(h["seconds"] for h in history)),
    }
    if s.aux is not None:  # the auxiliary tasks at the selected epoch (data.aux_holdout)
        metrics["aux"] = {which: s.aux.evaluate(s.model, which) for which in ("valid", "test")}
    write_json(out / "metrics.json", metrics)
    s.status.write("finished", epoch=len(history), **s.best_fields())


def _per_item_frame(result, relevant: np.ndarray, ks):
    """Per-item recall and NDCG at every cutoff (``eval.items``), one row per held-out item."""
    import pandas as pd

    from pmtrec_lab.eval.items import per_item_metrics

    frames = [per_item_metrics(result, relevant, int(k)).set_index(["item", "pairs"]) for k in ks]
    return pd.concat(frames, axis=1).reset_index()


def evaluate_run(
    run_dir: str | Path,
    device: str = "cpu",
    allow_changed_data: bool = False,
    allow_unfinished: bool = False,
) -> dict[str, Any]:
    """Re-evaluate a run's best checkpoint on test; returns the metric means.

    Refused when the data changed since the run trained (its test pairs may overlap what it
    trained on), naming both fingerprints, unless ``allow_changed_data``. Refused when the run is
    unfinished (paused, failed, stopped, or still training), naming its state and the epoch of
    its best checkpoint so far, unless ``allow_unfinished``: early metrics with exit 0 read as
    the run's result. With it, a notice says whose metrics they are. A ``best.pt`` of another run
    is named with what does not match."""
    run = load_run(run_dir)
    cfg = run.config
    recorded = run.status.get("data_fingerprint") if isinstance(run.status, dict) else None
    now = None if allow_changed_data else _changed_data(cfg, recorded)
    if now is not None:
        raise PmtrecError(
            f"{run_dir}: the data changed since this run trained (data fingerprint {recorded}; the "
            f"files now give {now}): its test metrics on the new split would "
            "not be a test; retrain it, or pass --allow-changed-data to evaluate anyway"
        )
    ckpt = Path(run_dir) / "best.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the run has no evaluated epoch yet")
    state = load_checkpoint(ckpt)
    check_checkpoint_run(ckpt, state, run_identity(cfg), _BEST_HINT)
    if not run.finished:
        what = (
            f"the run is unfinished ({_unfinished_state(run)}); its best checkpoint is from epoch "
            f"{state.get('epoch')}"
        )
        if not allow_unfinished:
            raise PmtrecError(
                f"{run_dir}: {what}, so its test metrics would not be the run's: resume it (train with "
                "the same configuration and --out) or let it finish, or pass --allow-unfinished to "
                "evaluate that checkpoint anyway"
            )
        log.warning("%s: %s; these are that checkpoint's test metrics", run_dir, what)
    ds = dataset_for_config(cfg.data)
    model = build_model(cfg, ds)
    load_model_state(model, state["model"], ckpt, _BEST_HINT)
    model.to(device)
    return evaluate_split(model, ds, cfg, "test", torch.device(device)).means()


def _unfinished_state(run: Run) -> str:
    """How an unfinished run stands, from its ``status.json`` and lock: paused, failed (why),
    still training (who holds the lock) or stopped (``running`` but no process holds the lock:
    killed), with its finished epochs."""
    status = run.status if isinstance(run.status, dict) else {}
    state = status.get("state")
    done = f"{status.get('epoch', '?')} of {run.config.optim.epochs} epochs done"
    if state == "running":
        holder = lock_holder(run.path)
        if holder is not None:
            return f"still training: {holder}; {done}"
        return f"stopped while training, {done}: status.json says running but no process holds its lock"
    if state == "failed":
        return f"failed, {done}: {status.get('error') or 'no reason recorded'}"
    if state is None:
        return "no status.json state"
    return f"{state}, {done}"
