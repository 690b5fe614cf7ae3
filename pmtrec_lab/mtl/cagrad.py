"""CAGrad: the conflict-averse direction within a ball around the average gradient."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from scipy.optimize import minimize

from pmtrec_lab.mtl._checks import check_matrix
from pmtrec_lab.mtl._flat import as_weights, gram64, present_tasks
from pmtrec_lab.mtl.base import FlatGradientMethod, register, register_aggregator
from pmtrec_lab.mtl.params import MethodParams


class CAGradParams(MethodParams):
    """CAGrad's hyper-parameters (Liu et al., NeurIPS 2021)."""

    c: float = Field(
        0.4, ge=0, description="radius of the ball around the average gradient, in units of its norm "
        "(the paper's c)"
    )
    rescale: int = Field(1, ge=0, le=2, description="output d (0), d / (1 + c^2) (1) or d / (1 + c) (2)")


def _project_simplex(v: np.ndarray) -> np.ndarray:
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u * np.arange(1, v.size + 1) > css)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def cagrad_dual(M: np.ndarray, c: float) -> np.ndarray:
    """argmin_{w in simplex} w^T M 1/K + c ||g0|| sqrt(w^T M w) on the Gramian M [K, K] (float64).

    SLSQP (as the authors' code, from the uniform weights) with the analytic gradient and a
    tight tolerance; should SLSQP report a failure (e.g. at the kink g_w = 0), it is restarted
    from each vertex and the best point kept.
    """
    K = M.shape[0]
    if K == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(M)))
    Ms = M / scale
    b = Ms.mean(1)  # M 1 / K: <g_j, g0>
    r = c * float(np.sqrt(max(b.mean(), 0.0)))  # c ||g0||
    smooth = 1e-20

    def fun(w):
        Mw = Ms @ w
        q = float(np.sqrt(max(w @ Mw, 0.0) + smooth))
        return float(w @ b) + r * q, b + r * Mw / q

    cons = ({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(K)},)
    starts = [np.full(K, 1.0 / K)] + [np.eye(K)[k] for k in range(K)]
    best_w, best_f = starts[0], fun(starts[0])[0]
    for w0 in starts:
        res = minimize(
            fun, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * K, constraints=cons,
            options={"ftol": 1e-15, "maxiter": 500},
        )
        w = _project_simplex(np.asarray(res.x, dtype=np.float64))
        f = fun(w)[0]
        if np.isfinite(f) and f <= best_f:
            best_w, best_f = w, f
        if res.success:
            break
    return best_w


def cagrad_weights(G: torch.Tensor, c: float = 0.4, rescale: int = 1) -> np.ndarray:
    """Weights ``omega`` with CAGrad's update ``= omega @ G`` (float64, [K]).

    omega = (1/K_p + sqrt(phi) / ||g_w|| w) / s over the K_p present tasks (all-zero rows get
    0), with s = 1, 1 + c^2, 1 + c for rescale 0, 1, 2.
    """
    check_matrix(G, "cagrad")
    CAGradParams.build("cagrad", {"c": c, "rescale": rescale})  # the bounds live in one place
    K = G.shape[0]
    M = gram64(G)
    present = present_tasks(M, G.dtype)
    omega = np.zeros(K)
    if not present.any():
        return omega
    idx = np.flatnonzero(present)
    Mp = M[np.ix_(idx, idx)]
    kp = idx.size
    g0_sq = float(Mp.sum()) / kp**2
    r = c * np.sqrt(max(g0_sq, 0.0))
    om = np.full(kp, 1.0 / kp)
    if r > 0.0:
        w = cagrad_dual(Mp, c)
        gw = float(np.sqrt(max(w @ Mp @ w, 0.0)))
        if gw > 1e-12 * np.sqrt(float(np.max(np.diag(Mp)))):
            om = om + (r / gw) * w
    omega[idx] = om / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]
    return omega


@register_aggregator("cagrad")
def cagrad(
    G: torch.Tensor, generator: torch.Generator | None = None, *, c: float = 0.4, rescale: int = 1
) -> torch.Tensor:
    """CAGrad aggregator. See ``CAGrad``."""
    return as_weights(cagrad_weights(G, c, rescale), G) @ G


@register
class CAGrad(FlatGradientMethod):
    """CAGrad: Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021.

    With g0 the average gradient and phi = c^2 ||g0||^2, the update maximizes the worst task
    improvement within a ball around g0:  d = argmax_{||d - g0|| <= sqrt(phi)} min_k <g_k, d>.
    Solved through its dual over the simplex,  min_w g_w^T g0 + sqrt(phi) ||g_w||  (g_w =
    sum_k w_k g_k), then d = g0 + sqrt(phi) / ||g_w|| g_w; the dual is solved on the K x K
    Gramian with SLSQP like the authors' code (plus extra starts, see ``cagrad_dual``).

    Hyper-parameters: c >= 0 (default 0.4, the paper's c in [0, 1)); rescale in {0, 1, 2}
    (default 1): the output is d, d / (1 + c^2) or d / (1 + c). The output is on the scale of
    the *average* gradient, as in the paper (EW sums). Head weights are 1.

    Deviation: tasks whose gradient row is all zero (touched no entity in the step) are left
    out (of g0's average and of the worst case), so CAGrad runs on the present tasks; with them
    in, min_k <g_k, d> would be pinned at 0 and the problem degenerate. If ||g_w|| = 0 at the
    optimum (0 in the hull) the update is g0, as in the authors' code.
    """

    name = "cagrad"
    summary: ClassVar[str] = (
        "CAGrad (Liu et al., NeurIPS 2021): best worst-task improvement near the average gradient"
    )
    Params: ClassVar[type[MethodParams]] = CAGradParams
