"""The per-entity memory of the main task's gradient (``docs/pmtrec-method.md``, "The v3 step",
its notation: ref_x, mag_x and A'_x), read by the reduce-only GMB (3') and focusing everywhere (5').

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

The stage (``EntityMemory``) runs after the magnitudes (2) and before the GMB (3, 3'), the first
step that reads it; it also marks A'_x, the rows where the main task enters the weights through
its memory (focusing everywhere: a memory, an auxiliary gradient and no main gradient).
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl._checks import check_state_keys
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["EntityMemory", "MainGradientMemory"]


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


class EntityMemory(Stage):
    """ref_x, mag_x and whether x has a memory, for the step's rows (updated before use), and
    the rows of A'_x outside A_x (``virtual``) with ``focus_everywhere``.

    Runs with focusing everywhere or a reduce-only GMB that is on (with rho = 0 nothing would
    read it); the GMB alone keeps only the magnitudes (``keep_ref=False``).
    """

    step = "v3 notation"
    reads = ("focus_everywhere", "gmb_mode", "rho", "memory_decay")
    switches = ("focus_everywhere", "gmb_mode", "rho")
    state_keys = ("main_memory",)
    state_name = "the per-entity main-gradient memory"

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        super().__init__(p, num_tasks)
        # the reference gradients are read by focusing everywhere only (the GMB reads magnitudes)
        self.memory = MainGradientMemory(p.memory_decay, owner="pmtrec", keep_ref=p.focus_everywhere)

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        return p.focus_everywhere or (p.gmb_mode == "entity_reduce" and p.rho > 0)

    @classmethod
    def drops_saved(cls, p: PMTRecParams) -> bool:
        # saved before rho = 0 stopped keeping the (unread) memory: nothing to restore
        return p.gmb_mode == "entity_reduce" and p.rho == 0

    def run(self, s: PMTRecStep) -> None:
        rows, num_rows = s.rows("focus_everywhere / gmb_mode='entity_reduce'")
        has_main = s.has_main
        s.ref, s.ref_mag, s.known = self.memory.update(rows, s.grads[MAIN_TASK], has_main, num_rows)
        if self.p.focus_everywhere:  # rows with auxiliary gradients, a reference, no main gradient
            s.virtual = s.known & ~has_main & s.active_t.any(dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"main_memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["main_memory"])

    def to(self, device: torch.device | str) -> None:
        self.memory.to(device)
