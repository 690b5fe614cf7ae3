"""Aligned-MTL: align the task gradients to condition number 1 through the Gramian's eigenbasis."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from pmtrec_lab.mtl._checks import check_matrix
from pmtrec_lab.mtl._flat import as_weights, gram64, present_tasks, weights_result
from pmtrec_lab.mtl.base import CombineResult, FlatGradientMethod, register, register_aggregator
from pmtrec_lab.mtl.params import MethodParams


class AlignedMTLParams(MethodParams):
    """Aligned-MTL's hyper-parameters (Senushkin et al., CVPR 2023)."""

    scale_mode: Literal["min", "median", "rmse"] = Field(
        "min",
        description="eigenvalue that sets the aligned gradients' common squared norm: the smallest "
        "kept lambda_R (the paper's Algorithm 1), or the median / mean (the official code's options)",
    )


def aligned_mtl_matrix(G: torch.Tensor, scale_mode: str = "min") -> np.ndarray:
    """The alignment matrix B [K, K] (float64): the aligned task gradients are ``B @ G``.

    Algorithm 1 of the paper: M = G G^T = V diag(lambda) V^T (eigenvalues above
    max(lambda) K eps(dtype) kept, R of them), Sigma^{-1} = diag(lambda_1..R^{-1/2}),
    B = sqrt(lambda_R) V Sigma^{-1} V^T, with lambda_R the smallest kept eigenvalue
    (``scale_mode="min"``; the official code's "median" / "rmse" use the median / mean
    eigenvalue instead). Then (B G)(B G)^T = lambda_R P (P the projector onto the range of M):
    the aligned gradients are orthogonal, all of norm sqrt(lambda_R) = the smallest nonzero
    singular value of G.
    """
    check_matrix(G, "aligned-mtl")
    AlignedMTLParams.build("aligned-mtl", {"scale_mode": scale_mode})  # the bounds live in one place
    return _matrix_from_gram(gram64(G), G.dtype, scale_mode)


def _matrix_from_gram(M: np.ndarray, dtype: torch.dtype, scale_mode: str) -> np.ndarray:
    K = M.shape[0]
    if not present_tasks(M, dtype).any():
        return np.zeros((K, K))
    lam, V = np.linalg.eigh(M)
    tol = float(lam.max()) * K * torch.finfo(dtype).eps
    keep = lam > tol
    lam, V = lam[keep], V[:, keep]
    if scale_mode == "min":
        s = float(lam.min())
    elif scale_mode == "median":
        # the lower median for an even count, as the official code's torch.median (and torchjd)
        s = float(np.sort(lam)[(lam.size - 1) // 2])
    else:
        s = float(lam.mean())
    return np.sqrt(s) * (V / np.sqrt(lam)) @ V.T


def aligned_mtl_weights(G: torch.Tensor, scale_mode: str = "min") -> np.ndarray:
    """alpha = B 1: the update ``sum_k (B G)_k = alpha @ G`` (paper's task weights w = 1)."""
    return aligned_mtl_matrix(G, scale_mode).sum(1)


@register_aggregator("aligned-mtl")
def aligned_mtl(
    G: torch.Tensor, generator: torch.Generator | None = None, *, scale_mode: str = "min"
) -> torch.Tensor:
    """Aligned-MTL aggregator: the sum of the aligned task gradients. See ``AlignedMTL``."""
    return as_weights(aligned_mtl_weights(G, scale_mode), G) @ G


@register
class AlignedMTL(FlatGradientMethod):
    """Aligned-MTL: Senushkin, Patakin, Kuznetsov, Konushin, "Independent Component Alignment
    for Multi-Task Learning", CVPR 2023.

    The task gradients' linear system is aligned to condition number 1: from the eigen-
    decomposition of the Gramian M = G G^T, B = sqrt(lambda_min) V Sigma^{-1} V^T, the aligned
    gradients B G are orthogonal with equal norms sqrt(lambda_min) (the smallest nonzero
    singular value of G: the paper's scale convention, Algorithm 1), and the update is their
    sum, i.e. alpha = B 1 applied to the raw gradients. Rank-deficient Gramians (e.g. an
    all-zero task row) keep the nonzero eigenvalues only, as the official code; a zero row gets
    alpha 0.

    Hyper-parameters: ``AlignedMTLParams`` (scale_mode "min", the paper's, or the official
    code's "median" / "rmse"). Acting on the representation gradients as here is the paper's
    Aligned-MTL-UB form (gradients w.r.t. the shared representation).

    ``head_weights``: alpha scaled to mean 1 over the present tasks; raw alpha in
    ``diagnostics["raw_task_weights"]``.
    """

    name = "aligned-mtl"
    summary: ClassVar[str] = (
        "Aligned-MTL (Senushkin et al., CVPR 2023): the gradient system aligned to a well-conditioned one"
    )
    Params: ClassVar[type[MethodParams]] = AlignedMTLParams
    hparams: AlignedMTLParams

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k, e, d = grads.shape
        M = gram64(grads.reshape(k, e * d))
        alpha = _matrix_from_gram(M, grads.dtype, self.hparams.scale_mode).sum(1)
        present = present_tasks(M, grads.dtype)
        return weights_result(grads, alpha, present)
