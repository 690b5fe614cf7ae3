"""MGDA-UB: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from pmtrec_lab.mtl._checks import check_losses, check_matrix
from pmtrec_lab.mtl._flat import as_weights, gram64, present_tasks, weights_result
from pmtrec_lab.mtl.base import CombineResult, FlatGradientMethod, register, register_aggregator
from pmtrec_lab.mtl.params import MethodParams

__all__ = ["MGDA", "MGDAParams", "mgda", "mgda_weights", "min_norm_weights"]


class MGDAParams(MethodParams):
    """MGDA-UB's hyper-parameters (Sener & Koltun, NeurIPS 2018; the authors' code's options)."""

    normalization: Literal["none", "l2", "loss", "loss+"] = Field(
        "none",
        description="gradient normalization n_k before the min-norm point: none (the paper's "
        "MGDA-UB), ||g_k|| ('l2'), L_k ('loss') or L_k ||g_k|| ('loss+')",
    )
    tol: float = Field(
        1e-9, gt=0, description="KKT / Frank-Wolfe-gap tolerance of the solver, relative to max_k ||g_k||^2"
    )
    max_iter: int = Field(250, ge=1, description="solver iteration cap (250: the authors' Frank-Wolfe)")
    solver: Literal["active-set", "frank-wolfe"] = Field(
        "active-set",
        description="Wolfe's exact min-norm-point algorithm, or the paper's Frank-Wolfe (Algorithm 2)",
    )


# --------------------------------------------------------------------------------------
# Min-norm point of the convex hull, on the Gramian.
# --------------------------------------------------------------------------------------


def _two_task(v11: float, v12: float, v22: float) -> float:
    """Sener & Koltun Algorithm 1: gamma minimising ||gamma a + (1 - gamma) b||^2 over [0, 1]."""
    den = v11 - 2.0 * v12 + v22
    if den <= 0.0:
        return 0.5 if v11 == v22 else float(v11 < v22)
    return float(np.clip((v22 - v12) / den, 0.0, 1.0))


def _affine_min_norm(A: np.ndarray) -> np.ndarray:
    """Weights y (sum 1) of the min-norm point of the affine hull: A y = mu 1, 1^T y = 1."""
    n = A.shape[0]
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = A
    kkt[:n, n] = 1.0
    kkt[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return sol[:n]


def _min_norm_active_set(M: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
    """Wolfe's min-norm-point (active-set) algorithm on the Gramian; exact at termination.

    Stops when every task satisfies (M a)_k >= a^T M a - tol (the KKT conditions; equality on
    the support holds to solver precision by construction).
    """
    K = M.shape[0]
    x = np.zeros(K)
    i0 = int(np.argmin(np.diag(M)))
    x[i0] = 1.0
    S = [i0]
    it = 0
    while it < max_iter:
        it += 1
        Mx = M @ x
        nx = float(x @ Mx)
        j = int(np.argmin(Mx))
        if Mx[j] >= nx - tol or j in S:
            break
        S.append(j)
        while it < max_iter:  # minor cycles: move to the affine minimiser of the support
            y = _affine_min_norm(M[np.ix_(S, S)])
            if np.all(y > 1e-15):
                x = np.zeros(K)
                x[S] = y
                break
            it += 1
            xs = x[S]
            neg = y <= 1e-15
            theta = float(np.min(xs[neg] / (xs[neg] - y[neg])))
            xs = xs + theta * (y - xs)
            drop = int(np.argmin(np.where(neg, xs, np.inf)))
            xs[drop] = 0.0
            keep = xs > 1e-15
            S = [s for s, k in zip(S, keep) if k]
            x = np.zeros(K)
            x[S] = xs[keep]
            x /= x.sum()
    return x, it


def _min_norm_frank_wolfe(M: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
    """Sener & Koltun Algorithm 2 (Frank-Wolfe, exact two-point line search), on the Gramian."""
    K = M.shape[0]
    x = np.full(K, 1.0 / K)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        Mx = M @ x
        nx = float(x @ Mx)
        t = int(np.argmin(Mx))
        if Mx[t] >= nx - tol:  # the Frank-Wolfe duality gap is below tol
            break
        gamma = _two_task(nx, float(Mx[t]), float(M[t, t]))
        x = gamma * x
        x[t] += 1.0 - gamma
    return x, it


def min_norm_weights(
    M: np.ndarray, tol: float = 1e-9, max_iter: int = 250, solver: str = "active-set"
) -> tuple[np.ndarray, int]:
    """Simplex weights of the min-norm point of conv{g_k}, from the Gramian M [K, K].

    ``tol`` is relative to max_k ||g_k||^2. Returns (weights, iterations).
    """
    K = M.shape[0]
    if K == 1:
        return np.ones(1), 0
    scale = float(np.max(np.diag(M)))
    if scale <= 0.0 or not np.isfinite(scale):
        return np.full(K, 1.0 / K), 0
    Ms = M / scale
    if K == 2:  # the exact two-task solution (Sener & Koltun, Algorithm 1)
        gamma = _two_task(Ms[0, 0], Ms[0, 1], Ms[1, 1])
        return np.array([gamma, 1.0 - gamma]), 1
    if solver == "frank-wolfe":
        x, it = _min_norm_frank_wolfe(Ms, tol, max_iter)
    else:
        x, it = _min_norm_active_set(Ms, tol, max_iter)
    x = np.clip(x, 0.0, None)
    return x / x.sum(), it


def mgda_weights(
    G: torch.Tensor,
    losses: torch.Tensor | None = None,
    normalization: str = "none",
    tol: float = 1e-9,
    max_iter: int = 250,
    solver: str = "active-set",
) -> tuple[np.ndarray, np.ndarray, int]:
    """MGDA's implied weights ``w`` on the raw gradients (``d = w @ G``), the present mask, iterations.

    With a normalization, the min-norm point is taken over the normalized gradients
    g_k / n_k and ``w = alpha / n``.
    """
    check_matrix(G, "mgda")
    MGDAParams.build(  # the bounds live in one place
        "mgda", {"normalization": normalization, "tol": tol, "max_iter": max_iter, "solver": solver}
    )
    K = G.shape[0]
    M = gram64(G)
    present = present_tasks(M, G.dtype)
    w = np.zeros(K)
    if not present.any():
        return w, present, 0
    idx = np.flatnonzero(present)
    norms = np.sqrt(np.diag(M)[idx])
    if normalization == "none":
        n = np.ones(idx.size)
    else:
        L = check_losses("mgda", losses, K, positive=True)[idx] if normalization != "l2" else None
        n = {"l2": lambda: norms, "loss": lambda: L, "loss+": lambda: L * norms}[normalization]()
    Mn = M[np.ix_(idx, idx)] / np.outer(n, n)
    alpha, it = min_norm_weights(Mn, tol=tol, max_iter=max_iter, solver=solver)
    w[idx] = alpha / n
    return w, present, it


@register_aggregator("mgda")
def mgda(
    G: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    losses: torch.Tensor | None = None,
    normalization: str = "none",
    tol: float = 1e-9,
    max_iter: int = 250,
    solver: str = "active-set",
) -> torch.Tensor:
    """MGDA-UB aggregator: ``sum_k alpha_k g_k`` at the min-norm point of the hull. See ``MGDA``."""
    w, _, _ = mgda_weights(G, losses, normalization, tol, max_iter, solver)
    return as_weights(w, G) @ G


@register
class MGDA(FlatGradientMethod):
    """MGDA-UB: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

    The update is the min-norm element ``d = sum_k alpha_k g_k`` of the convex hull of the task
    gradients (alpha on the simplex); here the g_k are the flattened per-entity representation
    gradients, i.e. the paper's MGDA-UB (gradients w.r.t. the shared representation).

    Solved on the K x K Gramian. K = 2 uses the paper's exact two-task solution (Algorithm 1).
    For K > 2 the default ``solver="active-set"`` (Wolfe's min-norm-point algorithm) terminates
    at the exact optimum: for the returned alpha, every task has <g_k, d> >= ||d||^2 - tol and
    equality on the support. ``solver="frank-wolfe"`` is the paper's Algorithm 2 (Frank-Wolfe
    with exact line search), which converges sublinearly and may stop at ``max_iter``.

    Hyper-parameters: ``MGDAParams``. The normalizations ("l2", "loss", "loss+") are those of
    the authors' code; the min-norm point is then taken over the normalized gradients.

    Deviation: a task whose gradient row is all zero (touched no entity in the step) is left
    out of the hull (weight 0); the paper's hull would contain 0 and stop the update.

    ``head_weights``: the implied weights w (``combined == w @ G``) scaled to mean 1 over the
    present tasks (EW's heads get all ones); the raw w is ``diagnostics["raw_task_weights"]``.
    """

    name = "mgda"
    summary: ClassVar[str] = (
        "MGDA-UB (Sener & Koltun, NeurIPS 2018): min-norm point of the convex hull of the task gradients"
    )
    Params: ClassVar[type[MethodParams]] = MGDAParams

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k, e, d = grads.shape
        w, present, it = mgda_weights(grads.reshape(k, e * d), losses=losses, **self.params)
        return weights_result(grads, w, present, {"solver_iterations": torch.tensor(it)})
