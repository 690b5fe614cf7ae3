"""A run's auxiliary-task evaluation (``data.aux_holdout``): the held-out cases of its auxiliary
tasks, built once from the dataset, and each task's metrics for a model, scored by the task's
own head (metric definitions: ``pmtrec_lab.eval.auxiliary``).

Link tasks score each held-out edge with ``score_pairs`` against its fixed negatives, in chunks
of ``CHUNK`` edges; label tasks predict the held-out entities with ``logits``. Only tasks whose
head the method trains are scored (``WeightingMethod.TRAINS_AUXILIARY``; single-task reports
nothing), and a task with nothing held out reports nothing either.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pmtrec_lab.data.aux_holdout import aux_holdout_of
from pmtrec_lab.data.types import LabelSet, RecDataset, Relation
from pmtrec_lab.eval.auxiliary import NEG_STREAM, label_metric, link_metrics, pair_keys, sample_non_edges

#: held-out edges scored at once (their negatives' representations are [CHUNK, 100, dim])
CHUNK = 2048
SPLITS = ("valid", "test")


@dataclass
class _LinkCase:
    anchors: torch.Tensor  # [E]
    pos: torch.Tensor  # [E]
    neg: torch.Tensor  # [E, N_NEGATIVES]


@dataclass
class _LabelCase:
    entities: torch.Tensor  # [n]
    target: torch.Tensor  # class indices [n], or multi-hot [n, L]
    multi: bool


def _link_case(
    rel: Relation, every_edge: np.ndarray, num_targets: int, split_seed: int, split: int
) -> _LinkCase:
    rng = np.random.default_rng([int(split_seed), NEG_STREAM, zlib.crc32(rel.name.encode()), split])
    neg = sample_non_edges(rel.src, num_targets, every_edge, rng)
    return _LinkCase(torch.as_tensor(rel.src), torch.as_tensor(rel.dst), torch.as_tensor(neg))


def _label_case(lab: LabelSet, multi: bool) -> _LabelCase:
    entities, row = np.unique(lab.entity, return_inverse=True)
    if multi:
        target = torch.zeros(len(entities), lab.num_labels)
        target[torch.as_tensor(row.reshape(-1)), torch.as_tensor(lab.label)] = 1.0
    else:
        target = torch.as_tensor(lab.label[np.unique(lab.entity, return_index=True)[1]])
    return _LabelCase(torch.as_tensor(entities), target, multi)


class AuxiliaryEvaluator:
    """The held-out cases of a run's auxiliary tasks, and their metrics for a model.

    Built once per run (``build``): the negatives are drawn then, from the data alone, so every
    run and every epoch of one dataset scores the same cases.
    """

    def __init__(self, tasks: list[Any], cases: dict[str, dict[str, _LinkCase | _LabelCase]]):
        self.tasks = {t.name: t for t in tasks}
        self.cases = cases  # split -> task name -> case

    @classmethod
    def build(
        cls, ds: RecDataset, tasks: list[Any], sources: list[str], trains_auxiliary: bool
    ) -> AuxiliaryEvaluator | None:
        """The evaluator of ``tasks`` (their data ``sources``, aligned), or None when the dataset
        has no auxiliary holdout. Tasks of a method that trains no auxiliary head, and tasks with
        nothing held out, get no case (they report nothing)."""
        held = aux_holdout_of(ds)
        if held is None:
            return None
        cases: dict[str, dict[str, _LinkCase | _LabelCase]] = {s: {} for s in SPLITS}
        scored = [(t, s) for t, s in zip(tasks, sources) if t.type != "rec" and trains_auxiliary]
        for task, source in scored:
            parts = {"valid": held.valid.get(source), "test": held.test.get(source)}
            if any(p is None or len(p) == 0 for p in parts.values()):
                continue
            if isinstance(parts["valid"], Relation):
                n = ds.num_users if parts["valid"].side == "user" else ds.num_items
                rels = [ds.relations[source], *parts.values()]
                src = np.concatenate([r.src for r in rels])
                dst = np.concatenate([r.dst for r in rels])
                every = np.unique(np.concatenate([pair_keys(src, dst, n), pair_keys(dst, src, n)]))
                for i, split in enumerate(SPLITS):
                    cases[split][task.name] = _link_case(parts[split], every, n, ds.split.split_seed, i)
            else:
                for split in SPLITS:
                    cases[split][task.name] = _label_case(parts[split], bool(task.multi))
        return cls([t for t, _ in scored], cases)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, which: str) -> dict[str, dict[str, float]]:
        """``{task: {metric: mean}}`` on ``which`` (``valid`` or ``test``), with the model's full
        representations as evaluation computes them (``model.encoder()`` in eval mode)."""
        cases = self.cases[which]
        if not cases:
            return {}
        model.eval()
        zu, zi = model.encoder()  # type: ignore[operator]
        model.train()
        dev = zu.device
        out: dict[str, dict[str, float]] = {}
        for name, case in cases.items():
            task = self.tasks[name]
            if isinstance(case, _LabelCase):
                logits = task.logits(zu, zi, case.entities.to(dev))
                out[name] = label_metric(logits, case.target.to(dev), case.multi)
                continue
            parts: list[dict[str, torch.Tensor]] = []
            for lo in range(0, len(case.anchors), CHUNK):
                a = case.anchors[lo : lo + CHUNK].to(dev)
                pos = task.score_pairs(zu, zi, a, case.pos[lo : lo + CHUNK].to(dev))
                neg = task.score_pairs(zu, zi, a, case.neg[lo : lo + CHUNK].to(dev))
                parts.append(link_metrics(pos, neg))
            out[name] = {k: float(torch.cat([p[k] for p in parts]).mean()) for k in parts[0]}
        return out


def flat_history(metrics: dict[str, dict[str, float]], prefix: str = "valid_aux") -> dict[str, float]:
    """``{task: {metric: v}}`` as ``history.json`` keys ``<prefix>/<task>/<metric>``."""
    return {f"{prefix}/{task}/{k}": v for task, m in metrics.items() for k, v in m.items()}
