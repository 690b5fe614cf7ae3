"""Nash-MTL: the Nash bargaining solution, G G^T alpha = 1 / alpha."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from pmtrec_lab.mtl._checks import check_matrix, check_state_keys
from pmtrec_lab.mtl._flat import as_weights, gram64, present_tasks, weights_result
from pmtrec_lab.mtl.base import CombineResult, FlatGradientMethod, register, register_aggregator
from pmtrec_lab.mtl.params import MethodParams


class NashMTLParams(MethodParams):
    """Nash-MTL's hyper-parameters (Navon et al., ICML 2022; defaults of the authors' code)."""

    update_weights_every: int = Field(
        1, ge=1, description="recompute alpha every this many steps and reuse it in between"
    )
    max_norm: float = Field(
        1.0, ge=0, description="clip the combined gradient to this norm (the authors' max_norm); 0 = off"
    )
    tol: float = Field(1e-9, gt=0, description="solver tolerance on max_k |alpha_k (G G^T alpha)_k - 1|")
    max_iter: int = Field(100, ge=1, description="Newton iteration cap of the alpha solver")


def nash_solve(M: np.ndarray, tol: float = 1e-9, max_iter: int = 100) -> tuple[np.ndarray, bool]:
    """alpha > 0 with (M alpha)_k alpha_k = 1 for all k, on a Gramian M [K, K] (float64).

    The equations are the stationarity conditions of the strictly convex, self-concordant
    f(alpha) = alpha^T M alpha / 2 - sum_k log alpha_k, minimized by damped Newton
    (step 1 / (1 + Newton decrement) until the decrement is small, then full steps), which
    stays in alpha > 0 without a line search and converges globally when a solution exists.
    Works in units where max_k M_kk = 1 and rescales alpha back. Returns (alpha, converged).
    A solution exists unless 0 is in the convex hull of the gradients (Pareto stationarity);
    then alpha grows along the null direction and the iteration stops at ``max_iter``.
    """
    scale = float(np.max(np.diag(M)))
    Ms = M / scale
    a = 1.0 / np.sqrt(np.clip(np.diag(Ms), 1e-300, None))  # exact for orthogonal gradients
    converged = False
    for _ in range(max_iter):
        Ma = Ms @ a
        if np.max(np.abs(a * Ma - 1.0)) <= tol:
            converged = True
            break
        grad = Ma - 1.0 / a
        H = Ms + np.diag(1.0 / (a * a))
        try:
            step = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(H, grad, rcond=None)[0]
        dec = float(np.sqrt(max(-grad @ step, 0.0)))
        t = 1.0 if dec < 0.25 else 1.0 / (1.0 + dec)
        new = a + t * step
        if not np.all(np.isfinite(new)) or np.any(new <= 0.0):
            break
        a = new
    else:
        Ma = Ms @ a
        converged = bool(np.max(np.abs(a * Ma - 1.0)) <= tol)
    return a / np.sqrt(scale), converged


def nash_mtl_weights(
    G: torch.Tensor, tol: float = 1e-9, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Nash-MTL's alpha [K] (float64; 0 for all-zero rows), the present mask, converged."""
    check_matrix(G, "nash-mtl")
    NashMTLParams.build("nash-mtl", {"tol": tol, "max_iter": max_iter})  # the bounds live in one place
    K = G.shape[0]
    M = gram64(G)
    present = present_tasks(M, G.dtype)
    alpha = np.zeros(K)
    if not present.any():
        return alpha, present, True
    idx = np.flatnonzero(present)
    a, ok = nash_solve(M[np.ix_(idx, idx)], tol, max_iter)
    alpha[idx] = a
    return alpha, present, ok


def _clip(d: torch.Tensor, max_norm: float) -> torch.Tensor:
    if max_norm <= 0:
        return d
    n = torch.linalg.vector_norm(d)
    return d * torch.clamp(max_norm / (n + 1e-6), max=1.0)


@register_aggregator("nash-mtl")
def nash_mtl(
    G: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    max_norm: float = 1.0,
    tol: float = 1e-9,
    max_iter: int = 100,
) -> torch.Tensor:
    """Nash-MTL aggregator: ``alpha @ G`` clipped to norm ``max_norm``. See ``NashMTL``."""
    NashMTLParams.build("nash-mtl", {"max_norm": max_norm, "tol": tol, "max_iter": max_iter})
    alpha, _, _ = nash_mtl_weights(G, tol, max_iter)
    return _clip(as_weights(alpha, G) @ G, max_norm)


@register
class NashMTL(FlatGradientMethod):
    """Nash-MTL: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task
    Learning as a Bargaining Game", ICML 2022.

    The update d = sum_k alpha_k g_k with alpha > 0 solving G G^T alpha = 1 / alpha (the Nash
    bargaining solution; then ||d||^2 = K). The authors solve it with a sequence of convex
    approximations in cvxpy (optim_niter = 20); here a damped-Newton solver on the K x K
    Gramian reaches max_k |alpha_k (G G^T alpha)_k - 1| <= tol (``nash_solve``). As in the
    authors' code the combined gradient is then clipped to norm ``max_norm`` (their
    ``clip_grad_norm_`` on the shared parameters; here the flattened representation block).

    Hyper-parameters: ``NashMTLParams`` (with ``update_weights_every`` > 1, alpha is reused in
    between and kept in ``state_dict``).

    Deviation: all-zero task rows (no entity touched in the step) are left out (alpha 0): the
    equations have no solution with a zero gradient. If the remaining gradients are Pareto
    stationary (0 in their hull) no solution exists either; the solver stops at ``max_iter``
    (``diagnostics["converged"] = 0``) and the clipped update stays finite.

    ``head_weights``: alpha scaled to mean 1 over the present tasks (the authors weight the
    heads' losses by alpha itself, whose scale is 1 / ||g||); raw alpha in
    ``diagnostics["raw_task_weights"]``.
    """

    name = "nash-mtl"
    summary: ClassVar[str] = (
        "Nash-MTL (Navon et al., ICML 2022): Nash bargaining solution over task gradients"
    )
    Params: ClassVar[type[MethodParams]] = NashMTLParams
    hparams: NashMTLParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        self.step = 0
        self.alpha: torch.Tensor | None = None  # float64, cpu
        self.present: torch.Tensor | None = None

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k, e, d = grads.shape
        flat = grads.reshape(k, e * d)
        converged = True
        p = self.hparams
        if self.alpha is None or self.step % p.update_weights_every == 0:
            alpha, present, converged = nash_mtl_weights(flat, tol=p.tol, max_iter=p.max_iter)
            self.alpha = torch.from_numpy(alpha)
            self.present = torch.from_numpy(present)
        self.step += 1
        res = weights_result(
            grads,
            self.alpha.numpy(),
            self.present.numpy(),
            {"converged": torch.tensor(float(converged))},
        )
        res.combined = _clip(res.combined, p.max_norm)
        return res

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "alpha": None if self.alpha is None else self.alpha.clone(),
            "present": None if self.present is None else self.present.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_keys(self.name, state, (), optional=("step", "alpha", "present"))
        self.step = int(state.get("step", 0))
        a, p = state.get("alpha"), state.get("present")
        self.alpha = None if a is None else torch.as_tensor(a, dtype=torch.float64).clone()
        self.present = None if p is None else torch.as_tensor(p, dtype=torch.bool).clone()
