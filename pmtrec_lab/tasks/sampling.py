"""Vectorized, seeded negative sampling with rejection of observed positives.

Membership is tested against sorted int64 keys ``a * n_b + b`` with ``searchsorted``; rejected
draws are redrawn in rounds (a loop over rounds, never over samples).
"""

from __future__ import annotations

import torch


def pair_keys(a: torch.Tensor, b: torch.Tensor, n_b: int) -> torch.Tensor:
    return a.to(torch.int64) * n_b + b.to(torch.int64)


class ObservedPairs:
    """Sorted keys of observed (anchor, target) pairs for fast membership tests."""

    def __init__(self, anchors: torch.Tensor, targets: torch.Tensor, num_targets: int):
        self.num_targets = num_targets
        self.keys = torch.unique(pair_keys(anchors, targets, num_targets))  # sorted

    def contains(self, anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.keys.numel() == 0:
            return torch.zeros(anchors.shape, dtype=torch.bool, device=anchors.device)
        q = pair_keys(anchors, targets, self.num_targets)
        pos = torch.searchsorted(self.keys, q).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == q


def sample_negatives(
    anchors: torch.Tensor,
    num_targets: int,
    generator: torch.Generator,
    observed: ObservedPairs | None,
    max_rounds: int = 20,
) -> torch.Tensor:
    """One uniform negative target per anchor, redrawn while it is an observed positive.

    After ``max_rounds`` the few remaining collisions are kept (an anchor observed with almost
    every target cannot be served otherwise).
    """
    neg = torch.randint(num_targets, anchors.shape, generator=generator)
    if observed is None:
        return neg
    bad = observed.contains(anchors, neg)
    for _ in range(max_rounds):
        n_bad = int(bad.sum())
        if n_bad == 0:
            break
        redraw = torch.randint(num_targets, (n_bad,), generator=generator)
        idx = bad.nonzero(as_tuple=True)[0]
        neg[idx] = redraw
        bad[idx] = observed.contains(anchors[idx], redraw)
    return neg
