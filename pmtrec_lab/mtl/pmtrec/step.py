"""What PMTRec's stages share: the step's tables (``PMTRecStep``) and the stage interface (``Stage``).

A stage is one step of ``docs/pmtrec-method.md`` ("The step", "The v3 step"). It declares the
``PMTRecParams`` fields it reads (``reads``, checked against its code by a test) and whether a
configuration runs it (``used``); it owns its state (``state_keys``, ``state_dict``,
``load_state_dict``, ``to``) and its diagnostics. ``PMTRec.combine`` builds one ``PMTRecStep``
from its inputs and hands it to each stage of the configuration in turn: a stage reads the tables
the earlier stages wrote and writes its own (the fields below name the stage that writes each).

The constants every stage may need are here (``NUM_SIDES``, ``MAIN_TASK``), so that no stage
reaches back into the method for them. Layout as in ``_gram``: per-(task, entity) tables are
task-major [K, E]; diagnostics are returned entity-major [E, K] (transposed views).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pmtrec_lab.mtl._gram import side_onehot
from pmtrec_lab.mtl.base import Need, StepContext
from pmtrec_lab.mtl.params import MAIN_TASK

if TYPE_CHECKING:
    from pmtrec_lab.mtl.pmtrec.params import PMTRecParams

__all__ = ["MAIN_TASK", "NUM_SIDES", "PMTRecStep", "Stage"]

NUM_SIDES = 2  # 0 = user, 1 = item


@dataclass(eq=False)
class PMTRecStep:
    """One call of ``combine``: its inputs, the tables every stage reads, and each stage's results.

    Fields without a default are written by the stage named beside them before any later stage
    reads them; those with ``None`` stay ``None`` where the stage that writes them does not run.
    """

    method: str  # the method's (or preset's) name, for messages
    grads: torch.Tensor  # [K, E, D] task gradients (``MomentBalance`` may rescale them first)
    active_t: torch.Tensor  # [K, E] bool: task k touched entity x (A_x, column-wise)
    act: torch.Tensor  # [K, E] the same as a 0/1 float mask, converted once
    side: torch.Tensor  # [E] int64 (0 user, 1 item)
    is_item: torch.Tensor  # [E] bool
    onehot: torch.Tensor  # [E, 2] ``_gram.side_onehot``
    ctx: StepContext
    # Gramian (1): n_x^k and <g_x^k, g_x^0>; the magnitude signal s_x^k (n_x^k unless 2' runs)
    norms: torch.Tensor = field(init=False)
    inner: torch.Tensor = field(init=False)
    signal: torch.Tensor = field(init=False)
    # Magnitudes (2): m^{k,s} [2, K], whether each has started, and r_x^k
    magnitude: torch.Tensor = field(init=False)
    initialized: torch.Tensor = field(init=False)
    r: torch.Tensor = field(init=False)
    # EntityMemory (the v3 notation): ref_x [E, D] (focus_everywhere only), mag_x [E], whether x
    # has a memory, and the rows where the main task enters through it (A'_x \ A_x)
    ref: torch.Tensor | None = None
    ref_mag: torch.Tensor | None = None
    known: torch.Tensor | None = None
    virtual: torch.Tensor | None = None
    # Schedule (5b): beta(t)
    beta: float = field(init=False)
    # Weights (4): w_x^k and the task sets they are taken over (A'_x)
    w: torch.Tensor = field(init=False)
    act_w: torch.Tensor = field(init=False)
    active_w: torch.Tensor = field(init=False)
    #: [K, E] factors of the combination's coefficients (GMB, usefulness, deviations), in the
    #: order their stages run; ``Combination`` multiplies them in that order
    factors: list[torch.Tensor] = field(default_factory=list)
    # Focusing (5a, 5'): projection coefficients against g^0 and against the memory ref_x
    proj: torch.Tensor | None = None
    proj_ref: torch.Tensor | None = None
    # Combination (6): the outputs
    combined: torch.Tensor = field(init=False)
    head_weights: torch.Tensor = field(init=False)
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    _rows: tuple[torch.Tensor, int] | None = field(default=None, repr=False)
    _meta: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls, method: str, grads: torch.Tensor, active: torch.Tensor, side: torch.Tensor, ctx: StepContext
    ) -> PMTRecStep:
        """Build the masks every stage reads (step 1's tables) from inputs ``WeightingMethod.combine``
        has checked."""
        active_t = active.bool().T  # [K, E]
        side = side.long()
        return cls(
            method=method,
            grads=grads,
            active_t=active_t,
            act=active_t.to(grads.dtype),
            side=side,
            is_item=side == 1,
            onehot=side_onehot(side, grads.dtype, NUM_SIDES),
            ctx=ctx,
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.grads.dtype

    @property
    def tiny(self) -> float:
        """The smallest positive normal number of the gradients' dtype (a safe denominator)."""
        return torch.finfo(self.grads.dtype).tiny

    @property
    def has_main(self) -> torch.Tensor:
        """[E] bool: the main task touched the entity in this step."""
        return self.active_t[MAIN_TASK]

    def rows(self, what: str) -> tuple[torch.Tensor, int]:
        """The step's global table rows (user id, or num_users + item id) and the table size, for
        the per-entity state tables of the v3 stages (``what`` names the setting that asks)."""
        if self._rows is None:
            ctx = self.ctx
            if ctx.entity_ids is None or ctx.num_entities is None:
                raise ValueError(
                    f"method {self.method!r}: {what} needs ctx.entity_ids and ctx.num_entities (set by "
                    "the trainer)"
                )
            rows = ctx.entity_ids.long() + self.side * int(ctx.num_entities[0])
            self._rows = rows, sum(ctx.num_entities)
        return self._rows

    def meta_cosines(self, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """cos(g_meta,x, g_x^k) [K, E] (0 where undefined) and where it is defined (0/1 [K, E]):
        rows touched by task k and the meta loss, both gradients non-zero. Computed once a step
        for the stages that read it (``what`` names the setting that asks)."""
        if self._meta is None:
            ctx, grads = self.ctx, self.grads
            if ctx.meta_grads is None or ctx.meta_active is None:
                raise ValueError(
                    f"method {self.method!r}: {what} needs the meta loss's gradients (ctx.meta_grads): "
                    "train with data.meta_split=true"
                )
            g_meta = ctx.meta_grads.to(grads.dtype)
            dots = torch.einsum("ked,ed->ke", grads, g_meta)
            den = grads.norm(dim=2) * g_meta.norm(dim=1).unsqueeze(0)
            both = self.act * ctx.meta_active.to(grads.dtype).unsqueeze(0) * (den > 0).to(grads.dtype)
            cos = dots / den.clamp_min(torch.finfo(grads.dtype).tiny) * both
            self._meta = cos, both
        return self._meta


class Stage:
    """One step of the method: what it reads, the state it keeps, what it writes into the step.

    Subclasses set ``step`` (the document's number), ``reads`` and, when they keep state,
    ``state_keys`` and ``state_name``; they implement ``run`` and, when they keep state,
    ``state_dict`` / ``load_state_dict`` / ``to``. A stage reads its parameters as ``self.p``
    (``p`` in its class methods), and only those in ``reads``.
    """

    #: the step of ``docs/pmtrec-method.md`` the stage implements ("2'", "3'' (a)", ...)
    step: ClassVar[str] = ""
    #: the ``PMTRecParams`` fields the stage reads (``tests/test_pmtrec_stages.py`` checks its code)
    reads: ClassVar[tuple[str, ...]] = ()
    #: the top-level keys of the method's ``state_dict`` this stage owns (none: no state)
    state_keys: ClassVar[tuple[str, ...]] = ()
    #: what the state is, in messages ("the per-entity main-gradient memory")
    state_name: ClassVar[str] = ""
    #: the parameters that switch the stage on, named in messages (a subset of ``reads``)
    switches: ClassVar[tuple[str, ...]] = ()
    #: what the stage needs from the trainer (``Need``; e.g. the meta loss's gradients,
    #: ``ctx.meta_grads``); the method's ``needs`` is the union over its stages
    needs: ClassVar[frozenset[Need]] = frozenset()

    def __init__(self, p: PMTRecParams, num_tasks: int) -> None:
        self.p = p
        self.num_tasks = num_tasks

    @classmethod
    def used(cls, p: PMTRecParams) -> bool:
        """Whether a configuration runs this stage (default: always)."""
        return True

    @classmethod
    def keeps_state(cls, p: PMTRecParams) -> bool:
        """Whether this configuration's method saves the stage's state (``state_keys``)."""
        return bool(cls.state_keys) and cls.used(p)

    @classmethod
    def drops_saved(cls, p: PMTRecParams) -> bool:
        """Whether a saved state of this stage, which the configuration does not keep, is dropped
        on load rather than refused (a state older checkpoints saved but nothing reads)."""
        return False

    @classmethod
    def describe_switches(cls, p: PMTRecParams) -> str:
        """``switches`` with their values in ``p``, for messages."""
        return ", ".join(f"{name}={getattr(p, name)!r}" for name in cls.switches)

    def run(self, s: PMTRecStep) -> None:
        """Read the step's tables, write this stage's (and its diagnostics into ``s.diagnostics``)."""
        raise NotImplementedError

    @property
    def meta_value_every(self) -> int | None:
        """Steps between evaluations of the meta loss on all meta pairs (None: never)."""
        return None

    def observe_meta_loss(self, value: float, ctx: StepContext) -> None:
        """The meta loss on all meta pairs, at a step ``meta_value_every`` asked for."""

    def state_dict(self) -> dict[str, Any]:
        """The stage's entries of the method's state (keys: ``state_keys``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s entries (ValueError on a malformed state)."""

    def to(self, device: torch.device | str) -> None:
        """Move the stage's state tensors to ``device``."""
