"""The training loop: epochs of per-entity multi-task steps, validation, early stopping,
checkpoints, resume, diagnostics and the final test evaluation.

Determinism: every epoch's sampling generator is seeded from (seed, epoch) and the method's from
(seed, epoch, 1), so a resumed run replays exactly what an uninterrupted run would have done.
A NaN/inf loss or gradient stops the run with an error naming the task and step; ``last.pt``
stays at the last good epoch.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pmtrec_lab.config import RunConfig, load_config
from pmtrec_lab.data import dataset_for_config
from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.encoders import build_encoder
from pmtrec_lab.errors import ConfigError, PmtrecError, TrainingDivergedError
from pmtrec_lab.eval import evaluate_embeddings, group_metrics, user_groups
from pmtrec_lab.mtl import StepContext, make_method
from pmtrec_lab.paths import write_text_atomic
from pmtrec_lab.tasks import Task, build_tasks, resolve_task_configs
from pmtrec_lab.train.diagnostics import DiagnosticsRecorder, default_weight_epochs
from pmtrec_lab.train.optim import make_optimizer
from pmtrec_lab.train.run import (
    Run,
    load_checkpoint,
    load_run,
    read_json,
    save_checkpoint,
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
        sparse=cfg.optim.sparse,
    )
    tasks = build_tasks(cfg, ds)
    return Model(encoder, tasks)


def social_relation(ds: RecDataset) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    for rel in ds.relations.values():
        if rel.side == "user":
            return rel.src, rel.dst
    return None, None


@torch.no_grad()
def evaluate_split(model: Model, ds: RecDataset, cfg: RunConfig, which: str, device: torch.device):
    """Full-ranking evaluation on ``valid`` (training items masked) or ``test`` (training and
    validation items masked)."""
    model.eval()
    users, items = model.encoder()
    model.train()
    exclude = [ds.split.train] if which == "valid" else [ds.split.train, ds.split.valid]
    relevant = ds.split.valid if which == "valid" else ds.split.test
    return evaluate_embeddings(
        users,
        items,
        exclude,
        relevant,
        ks=tuple(cfg.eval.ks),
        chunk_users=cfg.eval.chunk_users,
        device=device,
    )


@dataclass
class _Progress:
    mode: str

    @classmethod
    def make(cls, setting: str) -> _Progress:
        if setting == "auto":
            setting = "bar" if "ipykernel" in sys.modules else "log"
        return cls(setting)

    def steps(self, n: int, epoch: int):
        if self.mode == "bar":
            from tqdm.auto import tqdm

            return tqdm(range(n), desc=f"epoch {epoch}", leave=False)
        return range(n)

    def epoch_line(self, text: str) -> None:
        if self.mode in ("log", "bar"):
            print(text, flush=True)


def _state(model, optimizer, method, epoch, step, history, best, bad, recorder) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "method": method.state_dict(),
        "epoch": epoch,
        "step": step,
        "history": history,
        "best": best,
        "bad_epochs": bad,
        "diagnostics": recorder.state() if recorder is not None else None,
    }


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = True,
    dataset: RecDataset | None = None,
    max_epochs_this_call: int | None = None,
) -> Run:
    """Train (or resume, or return the finished run in ``out_dir``) and evaluate on test.

    ``max_epochs_this_call`` stops after that many epochs in this call, leaving a resumable run
    (state "paused"): a long run can be done over several sittings.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_text = cfg.to_yaml()
    if (out / "config.yaml").is_file() and resume:
        # the progress display does not change a run's result
        previous = load_config(out / "config.yaml").updated({"progress": "none"})
        if previous.to_yaml() != cfg.updated({"progress": "none"}).to_yaml():
            raise PmtrecError(
                f"{out} holds a run with a different configuration; use another --out or remove it"
            )
        status = read_json(out / "status.json") if (out / "status.json").is_file() else {}
        if status.get("state") == "finished":
            return load_run(out)
    device = torch.device(cfg.device)
    ds = dataset or dataset_for_config(cfg.data)
    model = build_model(cfg, ds).to(device)
    tasks: list[Task] = list(model.tasks)
    names = [t.name for t in tasks]
    try:
        method = make_method(cfg.method.name, len(tasks), **cfg.method.params).to(device)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method {cfg.method.name!r} (method.name / method.params): {exc}") from None
    # written once everything the configuration names was built: a bad setting leaves no run behind
    if not resume:  # starting over: nothing of an earlier run in this folder may be mistaken for ours
        for stale in ("best.pt", "last.pt", "metrics.json", "history.json", "status.json"):
            (out / stale).unlink(missing_ok=True)
    write_text_atomic(out / "config.yaml", cfg_text)
    optimizer = make_optimizer(cfg, model)
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
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "value": -float("inf"), "valid": {}}
    bad, start_epoch, global_step = 0, 0, 0
    if resume and (out / "last.pt").is_file():
        st = load_checkpoint(out / "last.pt")
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        method.load_state_dict(st["method"])
        history, best, bad = st["history"], st["best"], st["bad_epochs"]
        start_epoch, global_step = st["epoch"] + 1, st["step"]
        if recorder is not None and st.get("diagnostics"):
            recorder.load_state(st["diagnostics"])
    main: Task = tasks[0]
    steps_per_epoch = main.steps_for_epoch()
    progress = _Progress.make(cfg.progress)
    write_json(out / "status.json", {"state": "running", "epoch": start_epoch})
    stop_reason = "max_epochs"
    if bad >= cfg.eval.patience:
        stop_reason = "early_stopping"
    done_this_call = 0
    try:
        for epoch in range(start_epoch, cfg.optim.epochs):
            if stop_reason == "early_stopping":
                break
            if max_epochs_this_call is not None and done_this_call >= max_epochs_this_call:
                write_json(out / "status.json", {"state": "paused", "epoch": epoch - 1})
                return load_run(out)
            done_this_call += 1
            t0 = time.perf_counter()
            gen = _epoch_generator(cfg.seed, epoch)
            ctx_gen = _epoch_generator(cfg.seed, epoch, 1)
            for t in tasks:
                t.start_epoch(steps_per_epoch, gen)
            loss_sum = torch.zeros(len(tasks), dtype=torch.float64)
            last_beta: float | None = None
            for _ in progress.steps(steps_per_epoch, epoch):
                batches = [t.next_batch(gen) for t in tasks]
                ctx = StepContext(global_step, epoch, steps_per_epoch, names, ctx_gen)
                optimizer.zero_grad(set_to_none=True)
                res = train_step(model.encoder, tasks, batches, method, ctx, cfg.optim.l2, device)
                optimizer.step()
                if method.needs_losses_after:
                    method.after_step(_losses_after(model, tasks, batches, device), ctx)
                loss_sum += res.losses.double().cpu()
                if "beta" in res.result.diagnostics:
                    last_beta = float(res.result.diagnostics["beta"])
                if recorder is not None:
                    recorder.update(res, epoch)
                global_step += 1
            mean_losses = (loss_sum / steps_per_epoch).float()
            method.on_epoch_end(mean_losses, epoch)
            if recorder is not None:
                recorder.end_epoch(epoch)
            record: dict[str, Any] = {
                "epoch": epoch,
                **{f"loss/{n}": float(v) for n, v in zip(names, mean_losses)},
            }
            is_eval = (epoch + 1) % cfg.eval.every == 0 or epoch == cfg.optim.epochs - 1
            if is_eval:
                vres = evaluate_split(model, ds, cfg, "valid", device)
                vm = vres.means()
                record.update({f"valid/{k}": v for k, v in vm.items()})
                if cfg.eval.metric not in vm:
                    raise PmtrecError(f"eval.metric {cfg.eval.metric!r} not among {sorted(vm)}")
                value = vm[cfg.eval.metric]
                if value > best["value"]:
                    best = {"epoch": epoch, "value": value, "valid": vm}
                    bad = 0
                    save_checkpoint(out / "best.pt", {"model": model.state_dict(), "epoch": epoch})
                else:
                    bad += 1
            if last_beta is not None:
                record["beta"] = last_beta
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            save_checkpoint(
                out / "last.pt",
                _state(model, optimizer, method, epoch, global_step, history, best, bad, recorder),
            )
            write_json(out / "history.json", history)
            if recorder is not None:
                recorder.save(out / "diagnostics")
            losses_txt = " ".join(f"{n}={v:.4f}" for n, v in zip(names, mean_losses.tolist()))
            valid_txt = (
                f" valid {cfg.eval.metric}={record[f'valid/{cfg.eval.metric}']:.4f}" if is_eval else ""
            )
            progress.epoch_line(
                f"[{cfg.method.name}] epoch {epoch + 1}/{cfg.optim.epochs} {losses_txt}{valid_txt} "
                f"({record['seconds']:.1f}s)"
            )
            if is_eval and bad >= cfg.eval.patience:
                stop_reason = "early_stopping"
                break
    except TrainingDivergedError as exc:
        write_json(out / "status.json", {"state": "failed", "error": str(exc), "epoch": len(history)})
        raise
    _finish(cfg, out, model, ds, device, history, best, stop_reason)
    return load_run(out)


@torch.no_grad()
def _losses_after(model: Model, tasks: list[Task], batches, device) -> torch.Tensor:
    from pmtrec_lab.train.step import layout_step

    lay = layout_step(batches, device)
    zu, zi = model.encoder.encode(lay.users, lay.items)
    return torch.stack([t.loss(zu, zi, lay.local[j], b) for j, (t, b) in enumerate(zip(tasks, batches))])


def _finish(cfg, out: Path, model: Model, ds: RecDataset, device, history, best, stop_reason) -> None:
    if (out / "best.pt").is_file():
        model.load_state_dict(load_checkpoint(out / "best.pt")["model"])
    tres = evaluate_split(model, ds, cfg, "test", device)
    src, dst = social_relation(ds)
    groups = user_groups(ds.split.train, ds.num_users, src, dst)
    frame = tres.to_frame().merge(groups, left_on="user", right_index=True, how="left")
    write_parquet(out / "per_user_test.parquet", frame)
    write_json(out / "groups.json", group_metrics(tres, groups))
    beta = None
    if history:
        best_rec = next((h for h in history if h["epoch"] == best["epoch"]), None)
        beta = best_rec.get("beta") if best_rec else None
    metrics = {
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
    write_json(out / "metrics.json", metrics)
    write_json(out / "status.json", {"state": "finished", "epoch": len(history) - 1})


def evaluate_run(run_dir: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Re-evaluate a run's best checkpoint on test; returns the metric means."""
    run = load_run(run_dir)
    cfg = run.config
    ds = dataset_for_config(cfg.data)
    model = build_model(cfg, ds)
    ckpt = Path(run_dir) / "best.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the run has no evaluated epoch yet")
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    model.to(device)
    return evaluate_split(model, ds, cfg, "test", torch.device(device)).means()
