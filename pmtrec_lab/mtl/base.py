"""The interface every multi-task weighting method implements.

The trainer runs the encoder once, computes each task's gradient with respect to every
user/item representation row touched in the step, and hands them to a method:

    combine(grads [K, E, D], active [E, K], side [E], losses [K], ctx)
        -> CombineResult(combined [E, D], head_weights [K], diagnostics)

- ``grads[k, e]`` is dL_k/dz_e (zero where task k did not touch entity e); task 0 is the main
  task (``params.MAIN_TASK``), always. Rows ``e`` are the step's touched users first, then its touched items.
- ``active[e, k]`` is True where task k touched entity e (anchor, positive or negative).
- ``side[e]`` is 0 for a user row, 1 for an item row.
- ``losses[k]`` is task k's mean batch loss (detached).
- ``ctx.counts`` [E, K], ``ctx.entity_ids`` [E] and ``ctx.num_entities`` (set by the trainer;
  None when a caller builds the context by hand): occurrences of each row in each task's batch,
  the rows' ids within their side, and the table sizes, for methods with per-entity state.
- ``combined`` is back-propagated through the encoder once; task heads (label classifiers)
  receive ``head_weights[k] * grad(L_k)``.
- ``diagnostics`` maps names to small detached tensors; keys the recorder understands:
  ``entity_weights`` [E, K] (per-entity task weights), ``norm_ratio_before`` /
  ``norm_ratio_after`` [2, K] (per side: task magnitude over the main task's, before and after
  balancing), ``beta`` (scalar), ``task_weights`` [K] (global weights of loss-weighting methods).

Methods whose papers act on shared parameters (PCGrad, MGDA, CAGrad, ...) act here on the
flattened block [K, E*D] of the step's representation gradients (``FlatGradientMethod``); for
MF this is the same thing as the parameter form.

Hyper-parameters are a typed class per method (``Params``, a ``params.MethodParams``), the one
owner of their defaults and bounds; methods are listed by ``registry``.

A method may keep state (moving averages, learnable weights with their own optimizer); it is
explicit, seeded through ``ctx.generator``, and saved with the run by ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import torch

from pmtrec_lab.mtl.params import MAIN_TASK, MethodParams, NoParams
from pmtrec_lab.mtl.registry import METHODS, make_method, register


@dataclass
class StepContext:
    """What a method may know about the step besides the gradients."""

    step: int  # global step count, from 0
    epoch: int  # current epoch, from 0
    steps_per_epoch: int
    task_names: list[str]
    generator: torch.Generator  # seeded; the only source of randomness a method may use
    #: (num_users, num_items) of the model: the size of per-entity state tables
    num_entities: tuple[int, int] | None = None
    #: [E, K] float: how often entity row e occurs in task k's batch (set by ``train_step``)
    counts: torch.Tensor | None = None
    #: [E] int64: each row's id within its side (users first, then items; set by ``train_step``)
    entity_ids: torch.Tensor | None = None
    #: [E, D]: gradient of the meta loss (main-task loss on held-out meta pairs) per row, never
    #: applied; [E] bool ``meta_active`` marks the rows it touched (set by ``train_step`` for a
    #: method with ``Need.META_GRADIENTS`` on a dataset with a meta split)
    meta_grads: torch.Tensor | None = None
    meta_active: torch.Tensor | None = None

    @property
    def fractional_epoch(self) -> float:
        return self.step / max(1, self.steps_per_epoch)


def _describe(x: Any) -> str:
    """A tensor's shape and dtype, or another object's type, for the input checks' messages."""
    if isinstance(x, torch.Tensor):
        return f"{tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    return type(x).__name__


@dataclass
class CombineResult:
    combined: torch.Tensor  # [E, D]
    head_weights: torch.Tensor  # [K]
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)


class Need(StrEnum):
    """What a method may ask the trainer for besides the step's task gradients.

    A method declares the set it needs (``WeightingMethod.needs``); the trainer reads that set
    once, when it builds the run, and does the matching work at each step, so a new method adds
    no branch to the trainer. The members are strings: ``"losses_after" in method.needs`` works.
    """

    #: ``ctx.meta_grads`` / ``ctx.meta_active``: the gradient per row of the main-task loss on the
    #: held-out meta pairs of the step's touched entities (the dataset needs ``data.meta_split``)
    META_GRADIENTS = "meta_gradients"
    #: ``observe_meta_loss`` with the meta loss on all meta pairs, every ``meta_value_every``
    #: steps, before that step's ``combine`` (the dataset needs ``data.meta_split``)
    META_LOSS = "meta_loss"
    #: ``after_step`` with each task's loss on the same batch after the update (FAMO)
    LOSSES_AFTER = "losses_after"
    #: rounds of in-run selection of auxiliary levels (``train/level_selection.py``): before an
    #: epoch where ``level_groups`` names task groups, the trainer branches short continuations
    #: with each of ``level_candidates``, scores them on the meta split and calls ``set_levels``
    #: with the best (the dataset needs ``data.meta_split``)
    LEVEL_SELECTION = "level_selection"
    #: the method's combined gradient is already a step direction (per-task Adam): the trainer
    #: steps the encoder's representation tables with plain SGD at the run's learning rate
    #: (``train/optim.py``, ``PreconditionedTables``); the other parameters keep Adam
    OWN_PRECONDITIONING = "own_preconditioning"


#: the needs that read the meta split: a method declaring one trains only with ``data.meta_split``
META_SPLIT_NEEDS: frozenset[Need] = frozenset({Need.META_GRADIENTS, Need.META_LOSS, Need.LEVEL_SELECTION})
#: the capability flags methods set before ``needs`` (now read-only properties deriving from it)
_LEGACY_FLAGS: dict[str, Need] = {"needs_meta": Need.META_GRADIENTS, "needs_losses_after": Need.LOSSES_AFTER}


class WeightingMethod:
    """Base class: subclasses set ``name``, ``family`` and ``Params`` and implement ``_combine``.

    ``combine`` is a template: it checks the step's inputs once for every method (``check_inputs``:
    shapes and the number of tasks) and hands them to the subclass's ``_combine``, which may then
    rely on them. What a method needs from the trainer beyond the gradients is declared in
    ``needs`` (a set of ``Need``), never by a trainer branch of its own.

    Build with keyword parameters (``Method(3, c=0.5)``) or a validated ``params`` instance
    (what ``registry.make_method`` passes); either way ``self.hparams`` holds the typed
    parameters and ``self.params`` the same as a plain dict. Bad values raise
    ``params.MethodParamsError`` (a ValueError) naming the field and its bound.
    """

    name: str = "base"  # class default; a preset's instance carries the preset's name
    #: ``"baseline"`` or ``"pmtrec"`` (see ``registry``)
    family: ClassVar[str] = "baseline"
    #: one line for the method table (default: the docstring's first sentence)
    summary: ClassVar[str] = ""
    #: the method's hyper-parameters
    Params: ClassVar[type[MethodParams]] = NoParams
    #: what every instance of the class needs from the trainer (``Need``); a method whose needs
    #: depend on its parameters overrides the ``needs`` property instead
    NEEDS: ClassVar[frozenset[Need]] = frozenset()
    #: whether the method trains the auxiliary tasks' heads (single-task does not): auxiliary-task
    #: metrics (``data.aux_holdout``) are reported only for a task whose head the method trains
    TRAINS_AUXILIARY: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Fold an old capability flag a subclass still sets as a class bool
        (``needs_losses_after = True``) into ``NEEDS``, so the trainer, which reads only ``needs``,
        honours it; a flag overridden in any other way (a property) is refused with what to write
        instead, since its value could disagree with ``needs``."""
        super().__init_subclass__(**kwargs)
        for flag, need in _LEGACY_FLAGS.items():
            if flag not in cls.__dict__:
                continue
            value = cls.__dict__[flag]
            if not isinstance(value, bool):
                raise TypeError(
                    f"{cls.__name__}.{flag}: declare what the method needs from the trainer in NEEDS "
                    f"(or override the needs property), here Need.{need.name}; {flag} derives from it"
                )
            delattr(cls, flag)
            cls.NEEDS = cls.NEEDS | {need} if value else cls.NEEDS - {need}

    @property
    def needs(self) -> frozenset[Need]:
        """What this method needs from the trainer besides the task gradients (``Need``).

        Fixed for the method's life (its parameters do not change): the trainer reads it once.
        Default: the class's ``NEEDS``, plus ``META_LOSS`` when ``meta_value_every`` is set.
        """
        if self.meta_value_every is None:
            return self.NEEDS
        return self.NEEDS | {Need.META_LOSS}

    # The old capability flags, read from ``needs`` (plugins and tests still read them) --------
    @property
    def needs_meta(self) -> bool:
        """True if ``combine`` reads ``ctx.meta_grads`` (``Need.META_GRADIENTS``)."""
        return Need.META_GRADIENTS in self.needs

    @property
    def needs_losses_after(self) -> bool:
        """True if the method needs ``after_step`` with the losses after the update
        (``Need.LOSSES_AFTER``)."""
        return Need.LOSSES_AFTER in self.needs

    @property
    def reads_meta_split(self) -> bool:
        """True if the method reads the meta split at all (its gradients or its loss value): it
        then trains only on a dataset with ``data.meta_split`` on."""
        return not self.needs.isdisjoint(META_SPLIT_NEEDS)

    @property
    def meta_value_every(self) -> int | None:
        """Steps between evaluations of the meta loss on all meta pairs, which the trainer hands
        to ``observe_meta_loss`` before the step's ``combine`` (None: never)."""
        return None

    def observe_meta_loss(self, value: float, ctx: StepContext) -> None:
        """The meta loss on all meta pairs at a step with ``step % meta_value_every == 0``."""

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks < 1:
            raise ValueError(f"method {self.name!r}: num_tasks must be a positive int, got {num_tasks!r}")
        if params is None:
            upgrade = getattr(self.Params, "upgrade", None)
            params = self.Params.build(self.name, upgrade(kwargs, self.name) if upgrade else kwargs)
        elif kwargs:
            raise TypeError(f"method {self.name!r}: pass params= or keyword parameters, not both")
        elif not isinstance(params, self.Params):
            raise TypeError(f"method {self.name!r}: params must be a {self.Params.__name__}")
        self.num_tasks = num_tasks
        self.hparams = params
        self.params: dict[str, Any] = params.as_dict()

    def combine(
        self,
        grads: torch.Tensor,
        active: torch.Tensor | None,
        side: torch.Tensor | None,
        losses: torch.Tensor,
        ctx: StepContext,
    ) -> CombineResult:
        """One step's combination: ``check_inputs``, then the method's ``_combine``.

        The checks read shapes and dtypes only (no value, so no host sync on an accelerator);
        finiteness is the trainer's (``train.step.check_finite``).
        """
        self.check_inputs(grads, active, side, losses)
        return self._combine(grads, active, side, losses, ctx)

    def _combine(
        self,
        grads: torch.Tensor,
        active: torch.Tensor,
        side: torch.Tensor,
        losses: torch.Tensor,
        ctx: StepContext,
    ) -> CombineResult:
        """The method's combination, on inputs ``check_inputs`` accepted (see the module docstring
        for what each argument and the result hold)."""
        raise NotImplementedError(f"method {self.name!r} implements no _combine")

    def check_inputs(
        self,
        grads: torch.Tensor,
        active: torch.Tensor | None,
        side: torch.Tensor | None,
        losses: torch.Tensor,
    ) -> None:
        """Raise ValueError, naming the method and the mismatch, unless ``grads`` is [K, E, D] with
        the method's K, ``active`` [E, K] bool, ``side`` [E] and ``losses`` [K].

        ``active`` and ``side`` may be None for a method that reads neither (the flattened-block
        methods; tests call them so). Shapes and dtypes only: nothing here reads a value.
        """
        if not isinstance(grads, torch.Tensor) or grads.dim() != 3:
            raise ValueError(f"{self.name}: grads must be a [K, E, D] tensor, got {_describe(grads)}")
        self.check_num_tasks(grads)
        k_tasks, n_ent, _ = grads.shape
        if active is not None and (
            not isinstance(active, torch.Tensor)
            or tuple(active.shape) != (n_ent, k_tasks)
            or active.dtype != torch.bool
        ):
            raise ValueError(
                f"{self.name}: active must be an [E, K] = {(n_ent, k_tasks)} bool tensor, got "
                + _describe(active)
            )
        if side is not None and (not isinstance(side, torch.Tensor) or tuple(side.shape) != (n_ent,)):
            raise ValueError(f"{self.name}: side must be an [E] = ({n_ent},) tensor, got {_describe(side)}")
        if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (k_tasks,):
            raise ValueError(
                f"{self.name}: losses must be a [K] = ({k_tasks},) tensor, got {_describe(losses)}"
            )

    def check_num_tasks(self, grads: torch.Tensor) -> None:
        """Raise if ``grads`` [K, E, D] has another number of tasks than the method was built for."""
        if grads.shape[0] != self.num_tasks:
            raise ValueError(f"{self.name}: built for {self.num_tasks} tasks, got grads for {grads.shape[0]}")

    # Optional hooks -------------------------------------------------------------------
    def on_epoch_end(self, mean_losses: torch.Tensor, epoch: int) -> None:
        """Called with each task's mean loss over the finished epoch (DWA)."""

    def after_step(self, losses_after: torch.Tensor, ctx: StepContext) -> None:
        """Called with the losses on the same batch after the update (FAMO)."""

    def parameters(self) -> list[torch.Tensor]:
        """Learnable parameters the method owns (updated by its own optimizer)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state but got keys {sorted(state)}")

    def to(self, device: torch.device | str) -> WeightingMethod:
        for p in self.parameters():
            p.data = p.data.to(device)
        return self


class EqualWeighting(WeightingMethod):
    """EW: the update of sum_k L_k. Every task's gradient added with weight 1."""

    name = "ew"
    summary: ClassVar[str] = "EW: every task gradient with weight 1 (the update of sum_k L_k)"

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k = grads.shape[0]
        return CombineResult(
            combined=grads.sum(0),
            head_weights=torch.ones(k, dtype=grads.dtype, device=grads.device),
        )


AggregateFn = Callable[..., torch.Tensor]

#: name -> function G [K, D] -> [D] for gradient-manipulation methods.
AGGREGATORS: dict[str, AggregateFn] = {}


def register_aggregator(name: str) -> Callable[[AggregateFn], AggregateFn]:
    def deco(fn: AggregateFn) -> AggregateFn:
        AGGREGATORS[name] = fn
        return fn

    return deco


register(EqualWeighting)


class FlatGradientMethod(WeightingMethod):
    """Adapter: a gradient-manipulation aggregator applied to the flattened [K, E*D] block.

    Subclasses set ``name`` (the aggregator's registry name) and ``Params`` (the aggregator's
    keyword parameters). ``head_weights`` are 1.
    """

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k, e, d = grads.shape
        flat = grads.reshape(k, e * d)
        out = AGGREGATORS[self.name](flat, generator=ctx.generator, **self.params)
        return CombineResult(
            combined=out.reshape(e, d),
            head_weights=torch.ones(k, dtype=grads.dtype, device=grads.device),
        )


__all__ = [
    "MAIN_TASK",
    "METHODS",
    "META_SPLIT_NEEDS",
    "AGGREGATORS",
    "CombineResult",
    "EqualWeighting",
    "FlatGradientMethod",
    "Need",
    "StepContext",
    "WeightingMethod",
    "make_method",
    "register",
    "register_aggregator",
]
