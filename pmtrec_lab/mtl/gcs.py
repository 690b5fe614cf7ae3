"""GCS, Gradient Cosine Similarity: Du, Czarnecki, Jayakumar, Farajtabar, Pascanu,
Lakshminarayanan, "Adapting Auxiliary Losses Using Gradient Similarity", arXiv 1812.02224.

The paper adds an auxiliary task's gradient to the main task's only as far as the two agree:
the shared parameters move along ``g^0 + max(0, cos(g^k, g^0)) g^k`` (its weighted variant), so
an auxiliary gradient that conflicts with the main one is dropped and the update is always a
descent direction of the main loss (the paper's convergence argument).

Here the rule is applied per entity, on the representation rows of the step (the same
per-entity view as PMTRec's, ``base``): for entity x (a user or item row) and auxiliary task k,

    w_x^k = max(0, cos(g_x^k, g_x^0))   if the main task touched x in this step,
    w_x^k = 1                           otherwise (nothing to conflict with: EW there),

with ``cos(a, b) = 0`` when a or b is the zero vector, and ``G_x = g_x^0 + sum_k w_x^k g_x^k``.
The paper measures one cosine over all shared parameters; the per-row cosine lets an auxiliary
task help the entities where it agrees with the main task and stay out where it does not
(for MF the shared parameters are these rows, and the row-wise rule is the paper's rule applied
to each row's parameters separately).

Computed without a loop over entities: the gradients are scaled per (task, row) by their
largest absolute entry (the cosine does not change; squares of tiny float32 gradients no longer
underflow to a false zero norm), then one per-entity Gramian (``_gram.entity_gram``) gives every
inner product and norm, and the combination is ``_gram.combine_rows`` (a loop over the K tasks).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from pmtrec_lab.mtl._gram import combine_rows, entity_gram, task_major_stats
from pmtrec_lab.mtl.base import CombineResult, WeightingMethod, register
from pmtrec_lab.mtl.params import MAIN_TASK, MethodParams

__all__ = ["GCS", "GCSParams", "gcs_gates"]


class GCSParams(MethodParams):
    """GCS's hyper-parameters (Du et al., arXiv 1812.02224). The rule itself has none; the one
    choice left is how the task heads (task-specific parameters) are weighted.

    ``head_weights = "one"`` (default): every head gets its own loss's full gradient. The gate
    protects the main task from the auxiliary gradients on the *shared* parameters; a head only
    reads the representations and never changes the main loss, so gating it protects nothing and
    would only slow the auxiliary task's own learning. This is the paper's treatment of the
    task-specific parameters (the gate multiplies the auxiliary gradient of the shared parameters
    only) and the convention of the other gradient-manipulation baselines here (PCGrad,
    MetaBalance). ``"mean-gate"``: a head's weight is the mean gate ``w_x^k`` over the entities
    its task touched in the step (1 if none), as PMTRec weights its heads.
    """

    head_weights: Literal["one", "mean-gate"] = Field(
        "one",
        description="task heads' weights: 'one' (their own full gradient, as in the paper) or "
        "'mean-gate' (the mean gate over the entities the task touched, 1 if none)",
    )


def gcs_gates(grads: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(task, entity) gates and cosines with the main task, task-major: ``(gate, cos)`` [K, E].

    ``grads`` [K, E, D], ``active`` [E, K] bool. ``cos[k, x] = cos(g_x^k, g_x^0)`` (0 where
    either vector is zero; clamped to [-1, 1]); ``gate[k, x] = max(0, cos[k, x])`` where the main
    task touched x, 1 where it did not, and ``gate[0] = 1``. Gates are not masked by ``active``
    (an inactive task's gradient is zero anyway; ``GCS.combine`` masks them for its diagnostics).
    """
    main = MAIN_TASK
    amax = grads.abs().amax(dim=-1, keepdim=True)  # [K, E, 1]; 0 exactly for a zero vector
    unit = grads / torch.where(amax > 0, amax, torch.ones_like(amax))  # max |entry| 1, or all 0
    norms, inner = task_major_stats(entity_gram(unit), main)  # [K, E] each; norms >= 1 or 0
    den = norms * norms[main]
    cos = torch.where(den > 0, inner / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    cos = cos.clamp_(-1.0, 1.0)
    has_main = active[:, main].bool().unsqueeze(0)  # [1, E]
    gate = torch.where(has_main, cos.clamp_min(0.0), torch.ones_like(cos))
    gate[main] = 1.0
    return gate, cos


@register
class GCS(WeightingMethod):
    """GCS (Du et al., arXiv 1812.02224): every auxiliary gradient weighted per entity by
    max(0, cosine with the main task's gradient), 1 where the entity has no main-task gradient.
    Parameters: ``GCSParams``.

    No state, no randomness. ``head_weights``: see ``GCSParams`` (1 by default).

    Diagnostics (detached): ``entity_weights`` [E, K] (the coefficient of each task's gradient:
    1 for the main task and ``w_x^k`` for an auxiliary one where the task touched x, 0 where it
    did not); ``task_weights`` [K] (per task, the mean of ``w_x^k`` over the entities it touched,
    1 for the main task or a task that touched none: what the loss-weighting methods report as
    their global weights); ``cos_main`` [E, K] (cos(g_x^k, g_x^0), NaN where task k or the main
    task did not touch x); ``conflict_fraction`` [K] (among the entities touched by k that have a
    main-task gradient, the fraction with a negative cosine: where GCS drops the auxiliary
    gradient); ``share_gated`` (scalar: the fraction of auxiliary row updates, pairs (x, k >= 1)
    with k active on x, whose entity had a main-task gradient, i.e. that the gate applied to;
    NaN when there is no auxiliary row update).
    """

    name = "gcs"
    summary: ClassVar[str] = (
        "GCS (Du et al., arXiv 1812.02224): auxiliary gradients weighted per entity by max(0, cosine "
        "with the main task's)"
    )
    Params: ClassVar[type[MethodParams]] = GCSParams
    hparams: GCSParams

    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k_tasks = grads.shape[0]
        main = MAIN_TASK
        dtype = grads.dtype
        grads = grads.detach()
        gate, cos = gcs_gates(grads, active)
        combined = combine_rows(gate, grads)  # gate[main] = 1: g^0 enters unchanged

        act = active.bool().T.to(dtype)  # [K, E] 0/1
        weights = gate * act  # 0 where the task did not touch the entity
        count = act.sum(dim=1)  # [K]
        mean_gate = torch.where(count > 0, weights.sum(dim=1) / count.clamp_min(1), torch.ones_like(count))
        mean_gate[main] = 1.0
        if self.hparams.head_weights == "one":
            head = torch.ones(k_tasks, dtype=dtype, device=grads.device)
        else:
            head = mean_gate.clone()

        both = act * act[main]  # 1 where task k and the main task touched x
        cos_main = cos.mul(both).div_(both)  # x * 1 / 1 = x exactly; x * 0 / 0 = NaN
        conflict = (cos_main < 0).sum(dim=1).to(dtype) / both.sum(dim=1).clamp_min(1)  # NaN < 0: False
        aux_rows = act.sum() - act[main].sum()  # pairs (x, k != main) with k active on x
        gated_rows = both.sum() - both[main].sum()  # ... whose entity x has a main-task gradient
        share = gated_rows / aux_rows  # NaN (0 / 0) when no auxiliary task touched anything
        diagnostics = {
            "entity_weights": weights.T,
            "task_weights": mean_gate,
            "cos_main": cos_main.T,
            "conflict_fraction": conflict,
            "share_gated": share,
        }
        return CombineResult(combined=combined, head_weights=head, diagnostics=diagnostics)
