"""Auxiliary-task metrics on the auxiliary holdout (``data.aux_holdout``, ``data/aux_holdout.py``).

Multi-task methods are judged by every task's metric, so each auxiliary task is scored by its
own head on rows it never trained on:

- a link task (social, item-item): each held-out edge (u, v) is scored with the task's score
  (``score_pairs``, the dot product its BPR loss ranks by) against ``N_NEGATIVES`` = 100 targets
  w != u that are no edge of u in the relation (training or held out, either direction), drawn
  once per dataset with ``default_rng([split_seed, NEG_STREAM, crc32(relation), split])``
  (uniform, with replacement). ``auc``: the share of the 100 scored below the true target, ties
  counted half (0.5 for a constant score). ``hit@10``: whether the true target is among the top 10
  of the 101, ties broken at random and taken in expectation (``min(t + 1, 10 - g) / (t + 1)``,
  at least 0, with g negatives scored above and t tied; 10/101 for a constant score);
- a label task: ``accuracy`` of the head's arg-max (single-label) or ``micro_f1`` of its positive
  logits (multi-label, a label predicted where its logit is > 0, i.e. sigmoid > 0.5) on the
  held-out entities.

Every metric is the mean over the held-out edges or entities; everything is vectorized (edges in
chunks of ``CHUNK``, no loop over edges or entities). Only tasks whose head the method trains
are scored (``WeightingMethod.TRAINS_AUXILIARY``; single-task reports nothing).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pmtrec_lab.data.aux_holdout import aux_holdout_of
from pmtrec_lab.data.types import LabelSet, RecDataset, Relation

#: negatives per held-out edge
N_NEGATIVES = 100
#: the cutoff of the link tasks' hit rate
HIT_K = 10
#: the negatives' stream: ``default_rng([split_seed, NEG_STREAM, crc32(relation), split])``
NEG_STREAM = 3
#: held-out edges scored at once (their negatives' representations are [CHUNK, 100, dim])
CHUNK = 2048
SPLITS = ("valid", "test")


def link_metrics(pos: torch.Tensor, neg: torch.Tensor, k: int = HIT_K) -> dict[str, torch.Tensor]:
    """Per edge: ``auc`` and ``hit@k`` of the true score ``pos`` [E] against ``neg`` [E, m]."""
    above = (neg > pos.unsqueeze(1)).sum(1).to(torch.float64)
    ties = (neg == pos.unsqueeze(1)).sum(1).to(torch.float64)
    m = neg.shape[1]
    auc = (m - above - ties + 0.5 * ties) / m
    hit = torch.clamp(torch.minimum(ties + 1, k - above), min=0) / (ties + 1)
    return {"auc": auc, f"hit@{k}": hit}


def label_metric(logits: torch.Tensor, target: torch.Tensor, multi: bool) -> dict[str, float]:
    """``accuracy`` (``target``: class indices [n]) or ``micro_f1`` (``target``: multi-hot [n, L])."""
    if not multi:
        return {"accuracy": float((logits.argmax(1) == target).double().mean())}
    pred, truth = logits > 0, target > 0.5
    tp = float((pred & truth).sum())
    wrong = float((pred ^ truth).sum())  # false positives and false negatives
    return {"micro_f1": 2 * tp / (2 * tp + wrong) if tp + wrong > 0 else 0.0}


def _keys(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
    return a.astype(np.int64) * width + b.astype(np.int64)


def sample_non_edges(
    anchors: np.ndarray,
    num_targets: int,
    edge_keys: np.ndarray,
    rng: np.random.Generator,
    m: int = N_NEGATIVES,
    max_rounds: int = 50,
) -> np.ndarray:
    """``[E, m]`` uniform targets per anchor that are neither the anchor nor an edge of it
    (``edge_keys``: sorted ``anchor * num_targets + target`` of every edge); rejected draws are
    redrawn in rounds (a loop over rounds, never over draws), and the few left after
    ``max_rounds`` (an anchor linked to nearly every target) are kept."""
    neg = rng.integers(num_targets, size=(len(anchors), m))
    rows = np.repeat(np.arange(len(anchors)), m).reshape(len(anchors), m)

    def bad_of(r: np.ndarray, t: np.ndarray) -> np.ndarray:
        a = anchors[r]
        q = _keys(a, t, num_targets)
        pos = np.clip(np.searchsorted(edge_keys, q), 0, max(len(edge_keys) - 1, 0))
        hit = edge_keys[pos] == q if len(edge_keys) else np.zeros(q.shape, dtype=bool)
        return hit | (t == a)

    bad = bad_of(rows, neg)
    for _ in range(max_rounds):
        idx = np.flatnonzero(bad)
        if len(idx) == 0:
            break
        redraw = rng.integers(num_targets, size=len(idx))
        neg.flat[idx] = redraw
        bad.flat[idx] = bad_of(rows.flat[idx], redraw)
    return neg


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
                every = np.unique(np.concatenate([_keys(src, dst, n), _keys(dst, src, n)]))
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
