"""Step 4, weights (``docs/pmtrec-method.md``, "The step", 4, and "The v3 step", 4).

Personalized (``weight_mode="personalized"``): w_x = softmax over k in A'_x of
r_x^k / tau + beta(t) [k = 0] (beta added only where the main task is active; beta(t) is step
5b's schedule, whose stage runs before this one). ``uniform``: every logit 0 (beta still applies:
uniform with the schedule off is exactly 1 / |A_x|). ``shared``: the batch mean of the
personalized weights over the entities of the same side *with the same task set A_x* (the
spec's "per-side batch mean renormalized over A_x", made exact: averaging over entities with
different A_x would make shared weights differ from uniform even when the personalized ones are
uniform, and would shrink rare tasks; with a single task set per side the two readings coincide).

v3: A'_x is A_x plus the main task where x has no main gradient but a memory (focusing
everywhere); there the main task's r is 1, the side's typical magnitude, so beta(t) damps the
auxiliary weights too.
"""

from __future__ import annotations

import torch

from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, NUM_SIDES, PMTRecStep, Stage

__all__ = ["WEIGHT_MODES", "Weights", "group_mean"]

WEIGHT_MODES = ("personalized", "shared", "uniform")


def group_mean(w: torch.Tensor, active: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Shared weights: each entity gets the batch mean of the personalized weights over the
    entities of its side with the same task set A_x. ``w`` and ``active`` are task-major
    [K, E]; returns [K, E] (columns still sum to 1 over A_x). Groups are (side, A_x) codes;
    one ``index_add_`` each for sums and counts."""
    k, n_ent = w.shape
    if k <= 12:
        bits = 2 ** torch.arange(k, device=w.device)
        gid = side * (1 << k) + (active.long() * bits.unsqueeze(1)).sum(0)  # no integer matmul on CUDA
        n_groups = NUM_SIDES << k
    else:  # many tasks: compact the codes (one host sync)
        codes = torch.cat([side.unsqueeze(0), active.long()], dim=0).T
        _, gid = torch.unique(codes, dim=0, return_inverse=True)
        n_groups = int(gid.max()) + 1
    sums = torch.zeros(k, n_groups, dtype=w.dtype, device=w.device).index_add_(1, gid, w)
    counts = torch.zeros(n_groups, dtype=w.dtype, device=w.device).index_add_(
        0, gid, torch.ones(n_ent, dtype=w.dtype, device=w.device)
    )
    return (sums / counts.clamp_min(1))[:, gid]


class Weights(Stage):
    """w_x^k, task-major [K, E] (columns sum to 1 over A'_x, 0 outside it), and A'_x itself.

    Diagnostics: ``entity_weights`` [E, K] (w_x^k, 0 where inactive).
    """

    step = "4"
    reads = ("weight_mode", "tau")

    def run(self, s: PMTRecStep) -> None:
        act_w, active_w = s.act, s.active_t
        if s.virtual is not None:  # A'_x: the main task takes part through its memory
            active_w = s.active_t.clone()
            active_w[MAIN_TASK] |= s.virtual
            act_w = active_w.to(s.dtype)
            r_main = s.r[MAIN_TASK]
            s.r[MAIN_TASK] = torch.where(s.virtual, torch.ones_like(r_main), r_main)  # typical magnitude
        s.act_w, s.active_w = act_w, active_w
        s.w = self._softmax(s.r, act_w, active_w, s.side, s.beta)
        s.diagnostics["entity_weights"] = s.w.T

    def _softmax(
        self, r: torch.Tensor, act: torch.Tensor, active: torch.Tensor, side: torch.Tensor, beta: float
    ) -> torch.Tensor:
        """The weights from ``r`` [K, E] (its memory is reused), ``act`` its 0/1 float mask and
        ``active`` the same as bool."""
        if self.p.weight_mode == "uniform":
            logits = torch.zeros_like(r)
        else:
            logits = r.mul_(1.0 / self.p.tau)
        if beta != 0.0:  # only where the main task is active: inactive logits stay 0 <= active ones
            logits[MAIN_TASK].add_(act[MAIN_TASK], alpha=beta)
        # Softmax over A_x, written out (torch.softmax over a dim of size K ~ 3 is slow).
        # Logits are >= 0 where active and 0 where inactive, so the max over all tasks equals
        # the max over A_x (or 0): a safe shift. Inactive entries are zeroed after exp; an
        # entity without tasks gets 0.
        ex = (logits - logits.amax(dim=0)).exp_().mul_(act)
        w = ex.div_(ex.sum(dim=0).clamp_min(torch.finfo(ex.dtype).tiny))
        if self.p.weight_mode == "shared":
            w = group_mean(w, active, side)
        return w
