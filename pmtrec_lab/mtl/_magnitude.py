"""One per-(side, task) moving average of gradient magnitudes (PMTRec's m^{k,s}, MetaBalance's).

Both PMTRec (step 2) and MetaBalance keep, for every side s (users, items) and task k, an
exponential moving average of a magnitude of task k's gradient on side s, with the same rules:

- it starts at the first observed value (no zero-initialised bias);
- it is updated before use: ``m <- decay * m + (1 - decay) * value``;
- it keeps its value in a step where task k touched no entity of side s.

They differ only in the batch value averaged: PMTRec's is the mean per-entity norm over the
side's entities the task touched (``update``), MetaBalance's the Frobenius norm of the task's
whole gradient block on the side (``update_values`` with the values computed by the caller).
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl._checks import check_state_keys
from pmtrec_lab.mtl._gram import side_masked_mean

__all__ = ["SideMagnitudeEMA"]


class SideMagnitudeEMA:
    """Moving averages ``magnitude`` [S, K] and ``initialized`` [S, K] (bool) of S sides, K tasks.

    ``decay`` in [0, 1) is the weight of the old value. ``owner`` names the method in error
    messages. Both tensors start on the CPU (float32 zeros, all False) and follow the device and
    dtype of the last update's values; ``state_dict`` saves them as they are.
    """

    def __init__(self, num_sides: int, num_tasks: int, decay: float, *, owner: str = "magnitude"):
        for what, n in (("num_sides", num_sides), ("num_tasks", num_tasks)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"{owner}: {what} must be a positive int, got {n!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"{owner}: decay must be in [0, 1), got {decay!r}")
        self.num_sides, self.num_tasks, self.decay, self.owner = num_sides, num_tasks, float(decay), owner
        self.magnitude = torch.zeros(num_sides, num_tasks)
        self.initialized = torch.zeros(num_sides, num_tasks, dtype=torch.bool)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_sides, self.num_tasks)

    def update(self, norms: torch.Tensor, act: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Update from per-entity norms; returns the new ``magnitude`` m [S, K].

        ``norms`` [K, E] (task-major, ``norms[k, e] = ||g_e^k||``) and ``act`` [K, E] (0/1
        float or bool: task k touched entity e); ``onehot`` [E, S] is ``_gram.side_onehot``.
        The batch value of (s, k) is the mean of ``norms[k]`` over the entities of side s
        that task k touched; (s, k) is touched when there is at least one (PMTRec, step 2).
        """
        batch_mean, counts = side_masked_mean(norms, act, onehot)
        return self.update_values(batch_mean, counts > 0)

    def update_values(self, values: torch.Tensor, touched: torch.Tensor) -> torch.Tensor:
        """Update from per-(side, task) batch ``values`` [S, K] where ``touched`` [S, K] (bool).

        ``m = decay * m + (1 - decay) * values`` where touched and initialized, ``values``
        where touched for the first time, unchanged elsewhere. Returns the new m [S, K] (in
        ``values``' device and dtype); ``initialized`` becomes ``initialized | touched``.
        """
        if tuple(values.shape) != self.shape or tuple(touched.shape) != self.shape:
            raise ValueError(
                f"{self.owner}: values and touched must be {self.shape}, "
                f"got {tuple(values.shape)} and {tuple(touched.shape)}"
            )
        m_old = self.magnitude.to(device=values.device, dtype=values.dtype)
        init_old = self.initialized.to(device=values.device)
        d = self.decay
        ema = d * m_old + (1.0 - d) * values
        m = torch.where(touched, torch.where(init_old, ema, values), m_old)
        self.magnitude = m
        self.initialized = init_old | touched
        return m

    def state_dict(self) -> dict[str, Any]:
        """``{"magnitude": [S, K], "initialized": [S, K]}`` (copies)."""
        return {
            "magnitude": self.magnitude.detach().clone(),
            "initialized": self.initialized.detach().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s output; ValueError on other keys or shapes."""
        check_state_keys(self.owner, state, ("initialized", "magnitude"))
        mag = torch.as_tensor(state["magnitude"])
        init = torch.as_tensor(state["initialized"]).bool()
        if tuple(mag.shape) != self.shape or tuple(init.shape) != self.shape:
            raise ValueError(
                f"{self.owner} state tensors must be {self.shape}, "
                f"got {tuple(mag.shape)} and {tuple(init.shape)}"
            )
        self.magnitude = mag.detach().clone()
        self.initialized = init.detach().clone()

    def to(self, device: torch.device | str) -> SideMagnitudeEMA:
        self.magnitude = self.magnitude.to(device)
        self.initialized = self.initialized.to(device)
        return self
