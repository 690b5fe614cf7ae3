"""PCGrad: project each task gradient onto the normal plane of the gradients it conflicts with."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from pmtrec_lab.mtl._checks import check_matrix
from pmtrec_lab.mtl._flat import as_weights, gram64
from pmtrec_lab.mtl.base import FlatGradientMethod, register, register_aggregator


def pcgrad_coefficients(G: torch.Tensor, generator: torch.Generator | None = None) -> np.ndarray:
    """C [K, K] with the projected gradients ``g_i^PC = sum_m C[i, m] g_m`` (float64).

    The paper's loop, on coefficients: for each task i, start from e_i and, for every other task
    j in a random order (one ``torch.randperm`` of the tasks per i, drawn from ``generator``),
    when <g_i^PC, g_j> < 0 subtract <g_i^PC, g_j> / ||g_j||^2 from C[i, j]. The inner products
    are ``C[i] @ M[:, j]`` with the Gramian M = G G^T, so the cost is O(K^2 D) for M plus O(K^3).
    """
    check_matrix(G, "pcgrad")
    if generator is None:
        raise ValueError("pcgrad: a torch.Generator is required (no global RNG)")
    K = G.shape[0]
    M = gram64(G)
    C = np.eye(K)
    if K == 1:
        return C
    dev = generator.device
    for i in range(K):
        order = torch.randperm(K, generator=generator, device=dev).tolist()
        for j in order:
            if j == i or M[j, j] <= 0.0:
                continue
            dot = float(C[i] @ M[:, j])
            if dot < 0.0:
                C[i, j] -= dot / M[j, j]
    return C


@register_aggregator("pcgrad")
def pcgrad(G: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad aggregator: the sum of the projected task gradients. See ``PCGrad``."""
    C = pcgrad_coefficients(G, generator)
    return as_weights(C.sum(0), G) @ G


@register
class PCGrad(FlatGradientMethod):
    """PCGrad: Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task
    Learning", NeurIPS 2020.

    For each task i, its gradient is projected onto the normal plane of every other task's
    (original) gradient g_j it conflicts with (<g_i^PC, g_j> < 0), the others visited in a
    random order; the update is the sum of the projected gradients (Algorithm 1). Randomness
    comes only from the step's generator.

    No hyper-parameters. Properties: for K = 2 the update does not conflict with either
    gradient; with no conflicting pair it is the plain sum. For K >= 3 the update can still
    conflict with a task gradient (the paper's guarantee is for two tasks).

    Computed on coefficients through the K x K Gramian (see ``pcgrad_coefficients``) instead of
    on D-dimensional vectors; the result is the same. Head weights are 1 (the paper leaves the
    task-specific parameters' gradients untouched).
    """

    name = "pcgrad"
    summary: ClassVar[str] = (
        "PCGrad (Yu et al., NeurIPS 2020): project out conflicting components, tasks in random order"
    )
