"""Argument checks that the parameter classes cannot do, written once.

Hyper-parameters are checked by each method's ``MethodParams`` class (types, bounds); what is
left is what depends on the step or on the number of tasks: the gradient matrix and the losses
handed to an aggregator, a per-task parameter's length, and the keys of a saved state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import torch

from pmtrec_lab.mtl.params import MethodParamsError

__all__ = ["check_losses", "check_matrix", "check_state_keys", "per_task_values"]


def check_matrix(G: Any, method: str) -> None:
    """Raise ValueError unless ``G`` is a [K, D] tensor with K >= 1."""
    if not isinstance(G, torch.Tensor) or G.ndim != 2 or G.shape[0] < 1:
        shape = tuple(G.shape) if isinstance(G, torch.Tensor) else type(G).__name__
        raise ValueError(f"{method}: G must be a [K, D] tensor with K >= 1, got {shape}")


def check_losses(method: str, losses: Any, k: int, positive: bool) -> np.ndarray:
    """``losses`` as ``k`` finite float64 values (> 0 if ``positive``, else >= 0); ones if None."""
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


def per_task_values(method: str, field: str, value: float | list[float], num_tasks: int) -> list[float]:
    """A validated ``float | list[float]`` parameter as one float per task.

    A float applies to every task; a list must have ``num_tasks`` entries (the parameter class
    cannot know the number of tasks): otherwise ``MethodParamsError`` naming
    ``method.params.<field>``.
    """
    values = [value] * num_tasks if isinstance(value, int | float) else list(value)
    if len(values) != num_tasks:
        raise MethodParamsError(
            method,
            f"method {method!r}: method.params.{field}: expected a float or {num_tasks} floats "
            f"(one per task), got {value!r}",
            (field,),
        )
    return [float(v) for v in values]


def check_state_keys(
    method: str, state: Mapping[str, Any], required: Collection[str], optional: Collection[str] = ()
) -> None:
    """Raise ValueError unless ``state`` has every ``required`` key and no key outside both sets."""
    known = set(required) | set(optional)
    unknown, missing = set(state) - known, set(required) - set(state)
    if unknown or missing:
        raise ValueError(
            f"{method} state must have keys {sorted(required)}"
            + (f" (optionally {sorted(optional)})" if optional else "")
            + f", got {sorted(state)}"
        )
