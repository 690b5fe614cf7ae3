"""In-run selection of the auxiliary levels (PMTRec v4 candidate 1 (a), ``Need.LEVEL_SELECTION``;
``docs/pmtrec-method.md``, "PMTRec v4", "Candidates").

Before an epoch where the method asks for a round (``level_groups``), for each task group in turn:
the run's state (model, optimizer, method, step counter) is copied; each candidate level vector
(``level_candidates``) trains a branch from that copy for ``level_branch_epochs`` epochs, on the
same batches the run would draw next (the epoch-seeded generators), and is scored by NDCG@20 of
the held-out meta pairs (``meta_ndcg``); the better half (rounded up) trains on from where it
stopped, and so on until one is left (successive halving). The run then goes back to the copy,
sets the winner's levels and trains on. Branches write nothing: no checkpoint, history or
diagnostics; their epochs are counted in the round's record and in the next epoch's ``seconds``.

The meta pairs are training pairs held out of training (``data.meta_split``): the choice reads
neither validation nor test. Ties go to the earlier candidate in ``level_values``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pmtrec_lab.eval import evaluate_embeddings

__all__ = ["META_METRIC", "meta_ndcg", "select_levels"]

#: the branches' score, on the meta pairs
META_METRIC = "ndcg@20"


@torch.no_grad()
def meta_ndcg(model: Any, train_pairs: np.ndarray, meta_pairs: np.ndarray, device: torch.device) -> float:
    """Mean NDCG@20 of the meta pairs over their users, every item ranked except the user's
    training items (the meta pairs are one per user, so this is a per-user hit measure)."""
    model.eval()
    users, items = model.encoder()
    model.train()
    result = evaluate_embeddings(users, items, [train_pairs], meta_pairs, ks=(20,), device=device)
    return float(result.means()[META_METRIC])


def _capture(s: Any) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "model": s.model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "method": s.method.state_dict(),
            "step": s.global_step,
        }
    )


def _restore(s: Any, state: dict[str, Any]) -> None:
    # deep copies: the optimizer and method would otherwise keep (and update in place) the
    # captured tensors themselves
    s.model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    s.method.load_state_dict(copy.deepcopy(state["method"]))
    s.global_step = state["step"]


def _halving(
    s: Any,
    epoch: int,
    candidates: list[list[float]],
    train_epoch: Callable[[int], None],
    score: Callable[[], float],
) -> tuple[int, list[list[float | None]], int]:
    """Successive halving from the current state: (the winner's index, each stage's scores per
    candidate, None where it no longer ran; the branch epochs spent). Leaves the state as it found it."""
    start = _capture(s)
    states = dict.fromkeys(range(len(candidates)), start)
    alive = list(range(len(candidates)))
    stages: list[list[float | None]] = []
    spent, at = 0, epoch
    span = s.method.level_branch_epochs
    while True:
        scores: list[float | None] = [None] * len(candidates)
        for i in alive:
            _restore(s, states[i])
            s.method.set_levels(candidates[i])
            for e in range(at, at + span):
                train_epoch(e)
            spent += span
            scores[i] = score()
            if len(alive) > 1:
                states[i] = _capture(s)
        stages.append(scores)
        ranked = sorted(alive, key=lambda i: (-float(scores[i]), i))  # type: ignore[arg-type]
        alive = ranked[: math.ceil(len(alive) / 2)]
        if len(alive) == 1:
            break
        at += span
    _restore(s, start)
    return alive[0], stages, spent


def select_levels(s: Any, epoch: int, train_epoch: Callable[[int], None]) -> dict[str, Any] | None:
    """Run the round due before 0-based ``epoch``, if any; return its record (also kept in the
    method's state): the epoch, per group its tasks, candidates, scores per halving stage and choice,
    the levels chosen and the branch epochs spent."""
    groups = s.method.level_groups(epoch)
    if not groups:
        return None
    train_pairs, meta_pairs = s.ds.split.train, s.ds.split.meta

    def score() -> float:
        return meta_ndcg(s.model, train_pairs, meta_pairs, s.device)

    record: dict[str, Any] = {
        "epoch": epoch,
        "metric": f"meta {META_METRIC}",
        "groups": [],
        "branch_epochs": 0,
    }
    for group in groups:
        candidates = s.method.level_candidates(group)
        best, stages, spent = _halving(s, epoch, candidates, train_epoch, score)
        s.method.set_levels(candidates[best])
        record["groups"].append(
            {
                "tasks": [s.names[k] for k in group],
                "candidates": [c[group[0]] for c in candidates],
                "scores": stages,
                "chosen": candidates[best][group[0]],
            }
        )
        record["branch_epochs"] += spent
    record["levels"] = dict(zip(s.names, s.method.levels))
    s.method.end_level_round(record)
    return record
