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

``keep_ref=False`` keeps only ``mag`` and ``known``: the reduce-only GMB reads nothing else, and
the [N, D] table's gathers and scatters were most of its cost (H4 in ``docs/pmtrec-method.md``).
The magnitudes are computed exactly as with the table, so results do not change.
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl._checks import check_state_keys

__all__ = ["MainGradientMemory"]


class MainGradientMemory:
    """Moving averages of each entity's main-task gradient and its norm (see the module docstring)."""

    def __init__(self, decay: float, *, owner: str = "pmtrec", keep_ref: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"{owner}: main-gradient memory decay must be in [0, 1), got {decay!r}")
        self.decay, self.owner, self.keep_ref = float(decay), owner, bool(keep_ref)
        self.ref: torch.Tensor | None = None  # [N, D] (only with keep_ref)
        self.mag: torch.Tensor | None = None  # [N]
        self.known: torch.Tensor | None = None  # [N] bool

    def rows(
        self, entity_ids: torch.Tensor, side: torch.Tensor, num_entities: tuple[int, int]
    ) -> torch.Tensor:
        """Global table rows of the step's entities: user id, or num_users + item id."""
        return entity_ids.long() + side.long() * int(num_entities[0])

    def update(
        self, rows: torch.Tensor, g_main: torch.Tensor, has_main: torch.Tensor, num_rows: int
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Update from this step's main gradients; returns ``(ref [E, D], mag [E], known [E])``
        (``ref`` None without ``keep_ref``).

        ``rows`` [E] (unique), ``g_main`` [E, D] (zero where the main task did not touch the
        row), ``has_main`` [E] bool, ``num_rows`` the table size.
        """
        if self.mag is None:
            if self.keep_ref:
                self.ref = g_main.new_zeros(num_rows, g_main.shape[1])
            self.mag = g_main.new_zeros(num_rows)
            self.known = torch.zeros(num_rows, dtype=torch.bool, device=g_main.device)
        assert self.mag is not None and self.known is not None
        width = g_main.shape[1] if self.ref is None else self.ref.shape[1]
        if self.mag.shape[0] != num_rows or width != g_main.shape[1]:
            raise ValueError(
                f"{self.owner}: main-gradient memory holds {self.mag.shape[0]} rows x {width} dims, "
                f"the model has {num_rows} x {g_main.shape[1]}"
            )
        d = self.decay
        old_mag, old_known = self.mag[rows], self.known[rows]
        norm = g_main.norm(dim=1)
        mag = torch.where(has_main, torch.where(old_known, d * old_mag + (1 - d) * norm, norm), old_mag)
        known = old_known | has_main
        self.mag[rows], self.known[rows] = mag, known
        ref = None
        if self.ref is not None:
            old_ref = self.ref[rows]
            blended = torch.where(old_known.unsqueeze(1), d * old_ref + (1 - d) * g_main, g_main)
            ref = torch.where(has_main.unsqueeze(1), blended, old_ref)
            self.ref[rows] = ref
        return ref, mag, known

    def state_dict(self) -> dict[str, Any]:
        """``ref`` is [0, 0] when not kept (or before the first update)."""
        if self.mag is None:
            empty = torch.zeros(0)
            return {"ref": torch.zeros(0, 0), "mag": empty, "known": empty.bool()}
        assert self.known is not None
        ref = torch.zeros(0, 0) if self.ref is None else self.ref.clone()
        return {"ref": ref, "mag": self.mag.clone(), "known": self.known.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Loads a state saved with or without ``ref``; a memory that keeps none drops a saved
        one (its magnitudes are the same), one that needs it refuses a state without it."""
        check_state_keys(f"{self.owner} main-gradient memory", state, ("known", "mag", "ref"))
        ref, mag, known = (torch.as_tensor(state[k]) for k in ("ref", "mag", "known"))
        if mag.numel() == 0:
            self.ref = self.mag = self.known = None
            return
        has_ref = ref.numel() > 0
        bad_ref = has_ref and (ref.dim() != 2 or ref.shape[:1] != mag.shape)
        if mag.dim() != 1 or known.shape != mag.shape or bad_ref:
            raise ValueError(
                f"{self.owner} main-gradient memory: inconsistent shapes {tuple(ref.shape)}, "
                f"{tuple(mag.shape)}, {tuple(known.shape)}"
            )
        if self.keep_ref and not has_ref:
            raise ValueError(
                f"{self.owner} main-gradient memory: the saved state has no reference gradients "
                "(saved without focus_everywhere), which this configuration needs"
            )
        self.ref = ref.clone() if self.keep_ref else None
        self.mag, self.known = mag.clone(), known.bool().clone()

    def to(self, device: torch.device | str) -> MainGradientMemory:
        if self.mag is not None:
            assert self.known is not None
            self.mag, self.known = self.mag.to(device), self.known.to(device)
        if self.ref is not None:
            self.ref = self.ref.to(device)
        return self
