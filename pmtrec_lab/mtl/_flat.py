"""The flattened block's K x K Gramian: what the gradient-manipulation methods solve on.

The split with ``_gram``, by job:

- ``_gram``: *per-entity* tables, batched torch on the step's device, no host sync: the
  [E, K, K] Gramian of every entity's task gradients, the task-major [K, E] statistics derived
  from it and the per-entity combination (PMTRec, MetaBalance and the loss-weighting methods).
- ``_flat`` (here): *one* K x K Gramian ``G G^T`` of the flattened [K, E*D] block, moved to
  the host as float64 numpy, where the small solvers (MGDA's min-norm point, CAGrad's dual,
  IMTL-G's closed form, Aligned-MTL's eigenbasis, Nash-MTL's Newton, PCGrad's projections)
  run; then the implied task weights ``w`` (``update = w @ G``) back to the step's tensors.

The two share no code: different precision, device and layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pmtrec_lab.mtl.base import CombineResult

__all__ = ["as_weights", "comparable_head_weights", "gram64", "present_tasks", "weights_result"]


def gram64(G: torch.Tensor) -> np.ndarray:
    """The Gramian ``G G^T`` [K, K], computed in G's dtype on G's device, returned as float64 numpy.

    The O(K^2 D) product is the only work over D; every solver runs on this K x K matrix.
    """
    M = (G @ G.T).detach().to("cpu", torch.float64).numpy()
    top = float(np.max(np.diag(M)))
    if not np.isfinite(M).all() or top < 1e4 * torch.finfo(G.dtype).tiny:
        # overflow / underflow in G's dtype: redo in units of max |G| (one extra pass, rare)
        s = G.detach().abs().max()
        if torch.isfinite(s) and s > 0:
            Gs = G.detach() / s
            M = (Gs @ Gs.T).to("cpu", torch.float64).numpy() * float(s) ** 2
    return 0.5 * (M + M.T)


def present_tasks(M: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Tasks whose gradient is not (numerically) all zero: ||g_k||^2 > eps(dtype)^2 max_j ||g_j||^2.

    A task that touched no entity of the step has an all-zero row; the Gramian methods treat
    it as absent (weight 0) instead of letting it veto or dominate the update.
    """
    diag = np.clip(np.diag(M), 0.0, None)
    top = float(diag.max()) if diag.size else 0.0
    if top <= 0.0 or not np.isfinite(top):
        return np.zeros(diag.shape, dtype=bool)
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 1e-7
    return diag > (eps * eps) * top


def as_weights(w: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Host weights ``w`` as a tensor of ``like``'s dtype on its device."""
    return torch.as_tensor(np.asarray(w, dtype=np.float64), dtype=like.dtype, device=like.device)


def comparable_head_weights(w: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Head weights from implied task weights ``w`` (``combined == w @ G``), scaled to mean 1.

    The present tasks' weights are multiplied by ``n_present / sum(w_present)`` so that they
    average 1 over the present tasks, like EW's all-ones weights; an absent task (all-zero
    gradient row) gets 1. If the present weights do not sum to a positive number, all ones.
    """
    K = w.shape[0]
    out = np.ones(K, dtype=np.float64)
    n = int(present.sum())
    s = float(w[present].sum()) if n else 0.0
    if n and np.isfinite(s) and s > 1e-300:
        out[present] = w[present] * (n / s)
    return out


def weights_result(
    grads: torch.Tensor, w: np.ndarray, present: np.ndarray, extra: dict[str, Any] | None = None
) -> CombineResult:
    """``CombineResult`` for a method whose update is ``w @ flat(grads)``."""
    k, e, d = grads.shape
    wt = as_weights(w, grads)
    combined = (wt @ grads.reshape(k, e * d)).reshape(e, d)
    head = as_weights(comparable_head_weights(w, present), grads)
    diagnostics = {"task_weights": head.detach(), "raw_task_weights": wt.detach()}
    if extra:
        diagnostics.update(extra)
    return CombineResult(combined=combined, head_weights=head, diagnostics=diagnostics)
