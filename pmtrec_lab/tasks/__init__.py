"""Task instances of a run, built from the configuration and the dataset's defaults."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from pmtrec_lab.config import RunConfig, TaskConfig
from pmtrec_lab.data.graph import relation_split
from pmtrec_lab.data.registry import spec_for_data
from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.tasks.base import Task, TaskBatch
from pmtrec_lab.tasks.label import LabelTask
from pmtrec_lab.tasks.link import ItemItemTask, RecTask, SocialTask, bpr
from pmtrec_lab.tasks.sampling import ObservedPairs

__all__ = [
    "ItemItemTask",
    "LabelTask",
    "RecTask",
    "SocialTask",
    "Task",
    "TaskBatch",
    "bpr",
    "build_tasks",
    "resolve_task_configs",
]


def resolve_task_configs(cfg: RunConfig) -> list[TaskConfig]:
    """The run's task list: the main task, then the dataset defaults selected, then custom tasks
    (a folder dataset's defaults are its declared tasks: ``registry.spec_for_data``)."""
    spec = spec_for_data(cfg.data)
    defaults = {t.name: t for t in spec.tasks}
    if cfg.tasks.include is None:
        chosen = [t for t in spec.tasks if t.enabled]
    else:
        unknown = [n for n in cfg.tasks.include if n not in defaults]
        if unknown:
            raise ValueError(
                f"tasks.include: unknown task(s) {unknown} for dataset {spec.name!r}; "
                f"available: {sorted(defaults)}"
            )
        chosen = [defaults[n] for n in cfg.tasks.include]
    out = [TaskConfig(type="rec", source="interactions")]
    out += [TaskConfig(type=t.type, source=t.source) for t in chosen]  # type: ignore[arg-type]
    out += list(cfg.tasks.custom)
    names = [t.resolved_name() for t in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"tasks: duplicate task names {sorted(dup)}")
    return out


def _supervision_rows(ds: RecDataset, cfg: RunConfig, source: str, n: int):
    frac = cfg.encoder.split_relations.get(source)
    if frac is None or cfg.encoder.name != "hetero":
        return None
    return relation_split(n, frac, cfg.data.split_seed)[1]


def build_tasks(cfg: RunConfig, ds: RecDataset, out_dim: int) -> list[Task]:
    """Task modules, the main task first.

    ``out_dim`` is the width of the representations the tasks read: the built encoder's
    ``out_dim`` (label heads are ``Linear(out_dim, num_labels)``), not ``encoder.dim``, which is
    the width of its layer-0 tables only.
    """
    tasks: list[Task] = []
    for tc in resolve_task_configs(cfg):
        name = tc.resolved_name()
        if tc.type == "rec":
            bs = tc.batch_size or cfg.optim.batch_size
            train = ds.split.train
            task = RecTask(name, train[:, 0], train[:, 1], ds.num_items, bs, tc.reject_observed)
            if task.observed is not None and len(ds.split.meta):  # meta pairs are no negatives
                known = np.concatenate(ds.split.observed_outside_evaluation())
                anchors, targets = torch.as_tensor(known[:, 0]), torch.as_tensor(known[:, 1])
                task.observed = ObservedPairs(anchors, targets, ds.num_items)
            tasks.append(task)
            continue
        if tc.type in ("rec", "social", "item_item") and tc.loss not in ("auto", "bpr"):
            raise ValueError(f"task {name!r}: loss {tc.loss!r} does not fit a {tc.type} task (expected bpr)")
        if tc.type in ("social", "item_item"):
            rel = ds.relations.get(tc.source)
            want = "user" if tc.type == "social" else "item"
            if rel is None or rel.side != want:
                have = [n for n, r in ds.relations.items() if r.side == want]
                raise ValueError(
                    f"task {name!r}: dataset {ds.name!r} has no {want} relation {tc.source!r}; has {have}"
                )
            src, dst = rel.src, rel.dst
            rows = _supervision_rows(ds, cfg, tc.source, len(rel))
            cls = SocialTask if tc.type == "social" else ItemItemTask
            n_targets = ds.num_users if tc.type == "social" else ds.num_items
            task = cls(name, src if rows is None else src[rows], dst if rows is None else dst[rows],
                       n_targets, tc.batch_size, tc.reject_observed)
            if rows is not None and task.observed is not None:  # reject every observed link
                task.observed = ObservedPairs(torch.as_tensor(src), torch.as_tensor(dst), n_targets)
            tasks.append(task)
            continue
        lab = ds.labels.get(tc.source)
        want = "user" if tc.type == "user_label" else "item"
        if lab is None or lab.side != want:
            have = [n for n, l in ds.labels.items() if l.side == want]
            raise ValueError(
                f"task {name!r}: dataset {ds.name!r} has no {want} label set {tc.source!r}; has {have}"
            )
        if tc.loss == "bpr" or (tc.loss == "softmax" and lab.multi):
            kind, fits = ("multi", "bce") if lab.multi else ("single", "softmax or bce")
            raise ValueError(
                f"task {name!r}: loss {tc.loss!r} does not fit label set {tc.source!r} "
                f"({kind}-label; expected {fits})"
            )
        rows = _supervision_rows(ds, cfg, tc.source, len(lab))
        if rows is not None:
            lab = replace(lab, entity=lab.entity[rows], label=lab.label[rows])
        if tc.loss == "bce" and not lab.multi:
            lab = replace(lab, multi=True)  # one-hot targets, binary cross-entropy
        tasks.append(LabelTask(name, lab, out_dim, tc.batch_size))
    return tasks
