"""MGDA-UB: the min-norm point of the convex hull of the task gradients.

Also home of the small Gramian helpers the other gradient-manipulation modules share
(``gram64``, ``present_tasks``, ``comparable_head_weights``, ``as_weights``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pmtrec_lab.mtl.base import (
    CombineResult,
    FlatGradientMethod,
    register,
    register_aggregator,
)

# --------------------------------------------------------------------------------------
# Shared helpers: everything the Gramian-based methods need is the K x K matrix G G^T.
# --------------------------------------------------------------------------------------


def check_matrix(G: torch.Tensor, method: str) -> None:
    if not isinstance(G, torch.Tensor) or G.ndim != 2 or G.shape[0] < 1:
        shape = tuple(G.shape) if isinstance(G, torch.Tensor) else type(G).__name__
        raise ValueError(f"{method}: G must be a [K, D] tensor with K >= 1, got {shape}")


def gram64(G: torch.Tensor) -> np.ndarray:
    """The Gramian ``G G^T`` [K, K], computed in G's dtype on G's device, returned as float64 numpy.

    The O(K^2 D) product is the only work over D; every solver below runs on this K x K matrix.
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


def check_int(method: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{method}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(method: str, name: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{method}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_losses(method: str, losses: Any, k: int, positive: bool) -> np.ndarray:
    if losses is None:
        return np.ones(k)
    arr = (
        losses.detach().to("cpu", torch.float64).numpy()
        if isinstance(losses, torch.Tensor)
        else np.asarray(losses, dtype=np.float64)
    ).reshape(-1)
    if arr.shape != (k,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{method}: losses must be {k} finite values, got {arr.tolist()}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{method}: losses must be > 0 here, got {arr.tolist()}")
    if not positive and np.any(arr < 0):
        raise ValueError(f"{method}: losses must be >= 0, got {arr.tolist()}")
    return arr


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


_NORMALIZATIONS = ("none", "l2", "loss", "loss+")
_SOLVERS = ("active-set", "frank-wolfe")


def _validate(normalization: str, tol: float, max_iter: int, solver: str) -> None:
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"mgda: normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if solver not in _SOLVERS:
        raise ValueError(f"mgda: solver must be one of {_SOLVERS}, got {solver!r}")
    check_positive("mgda", "tol", tol)
    check_int("mgda", "max_iter", max_iter, 1)


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
    _validate(normalization, tol, max_iter, solver)
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

    Hyper-parameters:
      normalization: "none" (default, the paper's MGDA-UB), "l2" (g_k / ||g_k||), "loss"
        (g_k / L_k), "loss+" (g_k / (L_k ||g_k||)): the normalizations of the authors' code.
        The min-norm point is taken over the normalized gradients.
      tol: KKT / Frank-Wolfe-gap tolerance, relative to max_k ||g_k||^2 (default 1e-9).
      max_iter: solver iteration cap (default 250, as the authors' Frank-Wolfe).
      solver: "active-set" (default) or "frank-wolfe".

    Deviation: a task whose gradient row is all zero (touched no entity in the step) is left
    out of the hull (weight 0); the paper's hull would contain 0 and stop the update.

    ``head_weights``: the implied weights w (``combined == w @ G``) scaled to mean 1 over the
    present tasks (EW's heads get all ones); the raw w is ``diagnostics["raw_task_weights"]``.
    """

    name = "mgda"

    def __init__(
        self,
        num_tasks: int,
        *,
        normalization: str = "none",
        tol: float = 1e-9,
        max_iter: int = 250,
        solver: str = "active-set",
    ):
        _validate(normalization, tol, max_iter, solver)
        super().__init__(num_tasks, normalization=normalization, tol=tol, max_iter=max_iter, solver=solver)

    def combine(self, grads, active, side, losses, ctx):
        k, e, d = grads.shape
        w, present, it = mgda_weights(grads.reshape(k, e * d), losses=losses, **self.params)
        return weights_result(grads, w, present, {"solver_iterations": torch.tensor(it)})
