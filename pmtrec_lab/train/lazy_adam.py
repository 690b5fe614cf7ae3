"""Lazy Adam by index operations, for embedding tables (``optim.optimizer=lazy_adam``).

A step updates only the rows its gradient holds (a sparse COO gradient from ``nn.Embedding(sparse=
True)``: the rows the step looked up); each such row gets Adam's update (Kingma and Ba, ICLR 2015)
with bias correction from **its own step count**, the number of steps that touched it:

    t_r += 1
    m_r = beta1 m_r + (1 - beta1) g_r,        v_r = beta2 v_r + (1 - beta2) g_r^2
    p_r -= lr / (1 - beta1^t_r) * m_r / (sqrt(v_r) / sqrt(1 - beta2^t_r) + eps)

Rows outside the step keep their values, their moments and their counts. Every operation is an
``index_select`` / ``index_copy_`` over the touched rows or elementwise on them, so a step costs
``O(rows touched x dim)`` work whatever the table size (torch's dense Adam costs the whole
table); the time of those random row accesses still grows once the tables outgrow the CPU's
cache (``benchmarks/epoch_scaling.py`` measures it).

How it differs from ``torch.optim.SparseAdam`` (``optim.sparse``): SparseAdam keeps one step count
per parameter tensor, so a row first touched at step 1000 is bias-corrected as if it had 1000
steps of history: ``m`` is not scaled up by ``1 / (1 - beta1)`` nor ``v`` by ``1 / (1 - beta2)``,
and its first update is ``(1 - beta1) / sqrt((1 - beta2) / (1 - beta2^1000))`` = 2.5 times
Adam's first step (3.2 times later in training). Here a row's first touch is Adam's first step.
Also: ``weight_decay`` (L2 added to the gradient, as in ``torch.optim.Adam``) acts on the touched
rows; SparseAdam has none. A row touched at every step gets exactly dense Adam's
update (tested against ``torch.optim.Adam``). A dense gradient counts every row as touched.

State per parameter: ``step`` (int64 [rows]), ``exp_avg`` and ``exp_avg_sq`` (like the parameter);
``state_dict`` holds plain tensors and numbers, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["LazyAdam"]


class LazyAdam(torch.optim.Optimizer):
    """Adam with per-row step counts over the rows in each gradient; see the module docstring.

    Parameters are 2-D tables (rows are the first dimension; a 1-D parameter counts each element as
    a row). ``lr``, ``betas``, ``eps``, ``weight_decay`` as in ``torch.optim.Adam``.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"LazyAdam: invalid lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}"
            )
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state[p]
        if not st:
            st["step"] = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif st["step"].device != p.device:  # torch's load_state_dict leaves "step" where it was
            st["step"] = st["step"].to(p.device)
        return st

    @staticmethod
    def _rows_and_values(p: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unique touched rows (sorted) and their summed gradient rows."""
        if grad.is_sparse:
            g = grad.coalesce()
            return g.indices()[0], g.values()
        return torch.arange(p.shape[0], device=p.device), grad

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows, g = self._rows_and_values(p, p.grad)
                if rows.numel() == 0:
                    continue
                st = self._state(p)
                if wd:
                    g = g.add(p.index_select(0, rows), alpha=wd)
                t = st["step"].index_select(0, rows).add_(1)
                st["step"].index_copy_(0, rows, t)
                m = st["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
                v = st["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
                st["exp_avg"].index_copy_(0, rows, m)
                st["exp_avg_sq"].index_copy_(0, rows, v)
                # bias corrections per row, in float64 as torch.optim.Adam computes them (Python floats)
                shape = (-1,) + (1,) * (p.dim() - 1)
                t64 = t.to(torch.float64).view(shape)
                step_size = (lr / (1 - beta1**t64)).to(p.dtype)
                bc2_sqrt = (1 - beta2**t64).sqrt().to(p.dtype)
                denom = v.sqrt_().div_(bc2_sqrt).add_(eps)
                # rows are unique: gather, subtract, scatter (index_add_ on CPU measured 5-8x slower
                # on a 750k-row table, and its cost grew with the table)
                p_rows = p.index_select(0, rows).sub_(m.div_(denom).mul_(step_size))
                p.index_copy_(0, rows, p_rows)
        return loss
