"""Step 2, task magnitudes (``docs/pmtrec-method.md``, "The step", 2).

m^{k,s}: an exponential moving average (``ema_decay``) of the mean of the magnitude signal over
the entities of side s that task k touched; it starts at the first batch's mean, is updated
before use, and keeps its value in steps where task k touched no entity of side s
(``_magnitude.SideMagnitudeEMA``, shared with MetaBalance). The signal is n_x^k = ||g_x^k||, or
its frequency-free form s_x^k when step 2' runs. Relative magnitudes r_x^k = s_x^k / m^{k,s(x)}:
the weights are computed from r, never from raw norms.
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl._gram import side_table
from pmtrec_lab.mtl._magnitude import SideMagnitudeEMA
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import NUM_SIDES, PMTRecStep, Stage

__all__ = ["Magnitudes"]


class Magnitudes(Stage):
    """m^{k,s} [2, K] (state) and r_x^k [K, E] (0 where inactive).

    Diagnostics: ``magnitude`` [2, K] (m^{k,s}); ``magnitude_signal`` [E, K] (s_x^k, the norm
    the weights use: n_x^k unless ``norm_mode``).
    """

    step = "2"
    reads = ("ema_decay",)
    state_keys = ("magnitude", "initialized")
    state_name = "the task magnitudes m^{k,s}"

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        self.ema = SideMagnitudeEMA(NUM_SIDES, num_tasks, p.ema_decay, owner="pmtrec")

    def run(self, s: PMTRecStep) -> None:
        m = self.ema.update(s.signal, s.act, s.onehot)  # [2, K]
        s.magnitude, s.initialized = m, self.ema.initialized
        s.r = s.signal / side_table(m, s.is_item).clamp_min(s.tiny)
        s.diagnostics["magnitude"] = m.clone()
        s.diagnostics["magnitude_signal"] = s.signal.T

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state)

    def to(self, device: torch.device | str) -> None:
        self.ema.to(device)
