"""Step 2', frequency-free magnitudes (``docs/pmtrec-method.md``, "The v3 step", 2'; ``norm_mode``).

Task losses are batch means, so entity x's row gradient g_x^k is a sum over its c_x^k
occurrences in task k's batch, and n_x^k = ||g_x^k|| grows with c_x^k: at initialization like
sqrt(c) (the occurrences' gradients point in unrelated directions), later faster as they align.
Ranked by n, entities are ranked by sampling luck. The frequency-free signal is

    s_x^k = n_x^k / (c_x^k)^a

with ``a`` fixed (``sqrt_count``: 1/2, ``count``: 1) or fitted (``fitted``): a^{k,s} is a moving
average of the batch's least-squares slope of log n_x^k on log c_x^k over the entities of side
s that task k touched, clipped to [0, 2] (``MAX_EXPONENT``: late in training the norm can grow
faster than the count). ``benchmarks/norm_frequency.py`` measures all of them. The stage
(``FrequencyFree``) replaces the magnitude signal of step 2 (``PMTRecStep.signal``) by s.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from pmtrec_lab.mtl._gram import side_table
from pmtrec_lab.mtl._magnitude import SideMagnitudeEMA
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import NUM_SIDES, PMTRecStep, Stage

__all__ = [
    "MAX_EXPONENT",
    "NORM_MODES",
    "FrequencyExponent",
    "FrequencyFree",
    "batch_log_slope",
    "frequency_free",
]

NORM_MODES = ("raw", "sqrt_count", "count", "fitted")
#: upper bound of the fitted exponent
MAX_EXPONENT = 2.0
NormMode = Literal["raw", "sqrt_count", "count", "fitted"]


def batch_log_slope(
    norms: torch.Tensor, counts: torch.Tensor, act: torch.Tensor, onehot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (side, task) least-squares slope of log n on log c: ``(slope [S, K], valid [S, K])``.

    ``norms``, ``counts`` and ``act`` (0/1) are task-major [K, E]; ``onehot`` [E, S]. Only
    entities with c >= 1 and n > 0 count; a (side, task) whose counts do not vary (a task whose
    rows occur once each, as label tasks) is not valid. Five small matrix products.
    """
    use = act * (counts >= 1).to(act.dtype) * (norms > 0).to(act.dtype)
    x = counts.clamp_min(1).log() * use
    y = norms.clamp_min(torch.finfo(norms.dtype).tiny).log() * use
    n = use @ onehot  # [K, S]
    sx, sy = x @ onehot, y @ onehot
    sxx, sxy = (x * x) @ onehot, (x * y) @ onehot
    var = n * sxx - sx * sx
    valid = var > 1e-6 * n.clamp_min(1) ** 2
    slope = (n * sxy - sx * sy) / var.clamp_min(torch.finfo(var.dtype).tiny)
    return torch.where(valid, slope, torch.zeros_like(slope)).T, valid.T


class FrequencyExponent:
    """The fitted exponent a^{k,s} [S, K]: a moving average (``decay``) of the batch slope.

    Same rules as the magnitudes (``SideMagnitudeEMA``): starts at the first valid batch value,
    updated before use, kept where a batch gives no valid slope; clipped to [0, MAX_EXPONENT]
    when used. A (side, task) that never had a valid slope uses a = 0 (its counts are all
    equal, so any exponent only rescales it, which the relative magnitude cancels).
    """

    def __init__(self, num_sides: int, num_tasks: int, decay: float):
        self._ema = SideMagnitudeEMA(num_sides, num_tasks, decay, owner="pmtrec norm exponent")

    def update(
        self, norms: torch.Tensor, counts: torch.Tensor, act: torch.Tensor, onehot: torch.Tensor
    ) -> torch.Tensor:
        slope, valid = batch_log_slope(norms, counts, act, onehot)
        return self._ema.update_values(slope, valid).clamp(0.0, MAX_EXPONENT)

    @property
    def exponent(self) -> torch.Tensor:
        return self._ema.magnitude.clamp(0.0, MAX_EXPONENT)

    def state_dict(self) -> dict[str, Any]:
        return self._ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ema.load_state_dict(state)

    def to(self, device: torch.device | str) -> FrequencyExponent:
        self._ema.to(device)
        return self


def frequency_free(
    norms: torch.Tensor,
    counts: torch.Tensor,
    mode: str,
    is_item: torch.Tensor,
    exponent: torch.Tensor | None = None,
) -> torch.Tensor:
    """s_x^k = n_x^k / (c_x^k)^a for ``mode`` (see the module docstring); task-major [K, E].

    ``counts`` [K, E] (0 where inactive: treated as 1, the norm there is 0 anyway);
    ``exponent`` [S, K] is required for ``fitted``.
    """
    if mode == "raw":
        return norms
    c = counts.clamp_min(1)
    if mode == "sqrt_count":
        return norms / c.sqrt()
    if mode == "count":
        return norms / c
    if mode == "fitted":
        if exponent is None:
            raise ValueError("norm_mode='fitted' needs the fitted exponent")
        return norms / c.pow(side_table(exponent.to(norms.dtype), is_item))
    raise ValueError(f"norm_mode must be one of {NORM_MODES}, got {mode!r}")


class FrequencyFree(Stage):
    """s_x^k = n_x^k / (c_x^k)^a, from the trainer's occurrence counts (``ctx.counts``).

    State: the fitted exponent a^{k,s} (``norm_mode="fitted"`` only). Diagnostics:
    ``norm_exponent`` [2, K] (fitted only).
    """

    step = "2'"
    reads = ("norm_mode", "ema_decay")
    switches = ("norm_mode",)
    state_keys = ("norm_exponent",)
    state_name = "the fitted norm exponent"

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        self.exponent = FrequencyExponent(NUM_SIDES, num_tasks, p.ema_decay)

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.norm_mode != "raw"

    @classmethod
    def keeps_state(cls, p: PMTRecParams) -> bool:
        return p.norm_mode == "fitted"

    def run(self, s: PMTRecStep) -> None:
        mode = self.p.norm_mode
        if s.ctx.counts is None:
            raise ValueError(
                f"method {s.method!r}: norm_mode={mode!r} needs ctx.counts (the entities' occurrences "
                "per task, set by train_step)"
            )
        counts = s.ctx.counts.T.to(s.dtype)  # [K, E]
        exponent = None
        if mode == "fitted":
            exponent = self.exponent.update(s.norms, counts, s.act, s.onehot)
            s.diagnostics["norm_exponent"] = exponent.clone()
        s.signal = frequency_free(s.norms, counts, mode, s.is_item, exponent)

    def state_dict(self) -> dict[str, Any]:
        return {"norm_exponent": self.exponent.state_dict()} if self.p.norm_mode == "fitted" else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exponent.load_state_dict(state["norm_exponent"])

    def to(self, device: torch.device | str) -> None:
        self.exponent.to(device)
