"""IMTL-G: the combination with equal projections onto every unit task gradient."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from pmtrec_lab.mtl._checks import check_matrix
from pmtrec_lab.mtl._flat import as_weights, gram64, present_tasks, weights_result
from pmtrec_lab.mtl.base import CombineResult, FlatGradientMethod, register, register_aggregator


def imtl_g_weights(G: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """IMTL-G's alpha [K] (float64, sums to 1 over the present tasks) and the present mask.

    The paper's closed form alpha_{2:K} = g_1 U^T (D U^T)^{-1}, alpha_1 = 1 - sum alpha_{2:K}
    solves: sum alpha = 1 and <g, u_1> = <g, u_k> for g = sum alpha_k g_k, u_k = g_k / ||g_k||.
    On the Gramian M the same conditions read M alpha = c n (n_k = ||g_k||), so
    alpha = M^{-1} n / (1^T M^{-1} n): the same solution, symmetric in the tasks (a least-squares
    solve where M is singular). All-zero rows get alpha = 0.
    """
    check_matrix(G, "imtl-g")
    K = G.shape[0]
    M = gram64(G)
    present = present_tasks(M, G.dtype)
    alpha = np.zeros(K)
    if not present.any():
        return alpha, present
    idx = np.flatnonzero(present)
    Mp = M[np.ix_(idx, idx)]
    n = np.sqrt(np.diag(Mp))
    scale = float(n.max())
    # M/scale^2 x = n/scale: conditioning-friendly units.
    rcond = idx.size * torch.finfo(G.dtype).eps  # the Gramian's accuracy in G's dtype
    x = np.linalg.lstsq(Mp / scale**2, n / scale, rcond=rcond)[0]
    s = float(x.sum())
    if np.all(np.isfinite(x)) and abs(s) > 1e-12 * float(np.abs(x).sum()):
        alpha[idx] = x / s
    else:  # degenerate (the projections cannot be equalized with sum alpha = 1)
        alpha[idx] = 1.0 / idx.size
    return alpha, present


@register_aggregator("imtl-g")
def imtl_g(G: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """IMTL-G aggregator: ``sum_k alpha_k g_k``. See ``IMTLG``."""
    return as_weights(imtl_g_weights(G)[0], G) @ G


@register
class IMTLG(FlatGradientMethod):
    """IMTL-G: Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task
    Learning", ICLR 2021 (the gradient-balance part, IMTL-G).

    The update g = sum_k alpha_k g_k, sum_k alpha_k = 1, has the same projection onto every unit
    task gradient u_k = g_k / ||g_k|| (closed form, see ``imtl_g_weights``). No
    hyper-parameters. (The loss-scale part, IMTL-L, learns per-task loss scales and is not part
    of this method.)

    Deviation: a task with an all-zero gradient row (touched no entity in the step) has no unit
    gradient; it is left out (alpha 0) and the projections of the others are equalized.

    ``head_weights``: alpha scaled to mean 1 over the present tasks (sum alpha = 1, so K alpha
    when all are present); the raw alpha is ``diagnostics["raw_task_weights"]``.
    """

    name = "imtl-g"
    summary: ClassVar[str] = (
        "IMTL-G (Liu et al., ICLR 2021): equal projections of the update on every task gradient"
    )

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k, e, d = grads.shape
        alpha, present = imtl_g_weights(grads.reshape(k, e * d))
        return weights_result(grads, alpha, present)
