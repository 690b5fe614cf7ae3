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

Every metric is the mean over the held-out edges or entities; everything is vectorized (no loop
over edges or entities). This module holds the metrics and the negatives' draw (it reads no
dataset: ``eval`` sits below ``data``); ``pmtrec_lab.train.auxiliary`` builds a run's cases from
the dataset and scores a model's tasks on them.
"""

from __future__ import annotations

import numpy as np
import torch

#: negatives per held-out edge
N_NEGATIVES = 100
#: the cutoff of the link tasks' hit rate
HIT_K = 10
#: the negatives' stream: ``default_rng([split_seed, NEG_STREAM, crc32(relation), split])``
NEG_STREAM = 3


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


def pair_keys(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
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
        q = pair_keys(a, t, num_targets)
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
