"""Per-entity memory of the main task's gradient (PMTRec v3: focusing everywhere, reduce-only GMB).

In a step, most auxiliary row-updates fall on entities the main task did not touch (70% on
ciao), where PMTRec v2 can neither align nor damp them. The memory keeps, for every user and
item row, a moving average of its main-task gradient ``ref_x`` [D] and of its norm ``mag_x``,
updated (before use) in the steps where the main task touches the row:

    ref_x <- decay * ref_x + (1 - decay) * g_x^0     (the first time: g_x^0)
    mag_x <- decay * mag_x + (1 - decay) * ||g_x^0||

and left alone elsewhere. A row has a reference once the main task has touched it. Tables are
[num_users + num_items, D] (users first), allocated at the first update on the gradients' device
and dtype; updates are index operations on the step's rows (unique within a step).
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl._checks import check_state_keys

__all__ = ["MainGradientMemory"]


class MainGradientMemory:
    """Moving averages of each entity's main-task gradient and its norm (see the module docstring)."""

    def __init__(self, decay: float, *, owner: str = "pmtrec"):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"{owner}: main-gradient memory decay must be in [0, 1), got {decay!r}")
        self.decay, self.owner = float(decay), owner
        self.ref: torch.Tensor | None = None  # [N, D]
        self.mag: torch.Tensor | None = None  # [N]
        self.known: torch.Tensor | None = None  # [N] bool

    def rows(
        self, entity_ids: torch.Tensor, side: torch.Tensor, num_entities: tuple[int, int]
    ) -> torch.Tensor:
        """Global table rows of the step's entities: user id, or num_users + item id."""
        return entity_ids.long() + side.long() * int(num_entities[0])

    def update(
        self, rows: torch.Tensor, g_main: torch.Tensor, has_main: torch.Tensor, num_rows: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Update from this step's main gradients; returns ``(ref [E, D], mag [E], known [E])``.

        ``rows`` [E] (unique), ``g_main`` [E, D] (zero where the main task did not touch the
        row), ``has_main`` [E] bool, ``num_rows`` the table size.
        """
        if self.ref is None:
            self.ref = g_main.new_zeros(num_rows, g_main.shape[1])
            self.mag = g_main.new_zeros(num_rows)
            self.known = torch.zeros(num_rows, dtype=torch.bool, device=g_main.device)
        assert self.mag is not None and self.known is not None
        if self.ref.shape[0] != num_rows or self.ref.shape[1] != g_main.shape[1]:
            raise ValueError(
                f"{self.owner}: main-gradient memory holds {tuple(self.ref.shape)} rows x dims, "
                f"the model has {num_rows} x {g_main.shape[1]}"
            )
        d = self.decay
        old_ref, old_mag, old_known = self.ref[rows], self.mag[rows], self.known[rows]
        norm = g_main.norm(dim=1)
        hm = has_main.unsqueeze(1)
        blended = torch.where(old_known.unsqueeze(1), d * old_ref + (1 - d) * g_main, g_main)
        ref = torch.where(hm, blended, old_ref)
        mag = torch.where(has_main, torch.where(old_known, d * old_mag + (1 - d) * norm, norm), old_mag)
        known = old_known | has_main
        self.ref[rows], self.mag[rows], self.known[rows] = ref, mag, known
        return ref, mag, known

    def state_dict(self) -> dict[str, Any]:
        if self.ref is None:
            empty = torch.zeros(0)
            return {"ref": torch.zeros(0, 0), "mag": empty, "known": empty.bool()}
        assert self.mag is not None and self.known is not None
        return {"ref": self.ref.clone(), "mag": self.mag.clone(), "known": self.known.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_keys(f"{self.owner} main-gradient memory", state, ("known", "mag", "ref"))
        ref, mag, known = (torch.as_tensor(state[k]) for k in ("ref", "mag", "known"))
        if ref.numel() == 0:
            self.ref = self.mag = self.known = None
            return
        if ref.dim() != 2 or mag.shape != ref.shape[:1] or known.shape != ref.shape[:1]:
            raise ValueError(
                f"{self.owner} main-gradient memory: inconsistent shapes {tuple(ref.shape)}, "
                f"{tuple(mag.shape)}, {tuple(known.shape)}"
            )
        self.ref, self.mag, self.known = ref.clone(), mag.clone(), known.bool().clone()

    def to(self, device: torch.device | str) -> MainGradientMemory:
        if self.ref is not None:
            assert self.mag is not None and self.known is not None
            self.ref, self.mag, self.known = self.ref.to(device), self.mag.to(device), self.known.to(device)
        return self
