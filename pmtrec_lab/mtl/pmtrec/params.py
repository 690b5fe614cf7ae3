"""PMTRec's parameters (``PMTRecParams``): the one place their defaults are written.

The class stays flat, one field per setting, whatever stage reads it: grid run names hash the
resolved flat parameters (``compare.layout.run_key``), so a field's name and default are part of
every finished run's name. Each stage of the package declares the fields it reads
(``Stage.reads``). A new stage's fields go here, at values that switch it off, and into
``name_neutral`` with those values, so that finished runs keep their names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pmtrec_lab.mtl.params import MethodParams

__all__ = ["DEFAULT_LEVEL_AT", "DEFAULT_LEVEL_VALUES", "PMTRecParams"]

#: v4 level_select's candidate levels and selection epochs (``docs/pmtrec-method.md``, "PMTRec v4")
DEFAULT_LEVEL_VALUES = (1.0, 0.3, 0.1, 0.0)
DEFAULT_LEVEL_AT = (5, 15)

log = logging.getLogger("pmtrec_lab.mtl")


class PMTRecParams(MethodParams):
    """PMTRec's hyper-parameters and their defaults: the one place the defaults are written.

    The v2 defaults (tau, the schedule, alignment) were chosen once on ciao and lastfm
    validation data (``results/tuning``); the v3 study (``results/study-v3``,
    ``results/study-v3-combined``; ``docs/pmtrec-method.md``, "The validation study" and
    "Iteration 2") then chose, by a rule fixed before its runs and on validation data of four
    datasets only, v3's one change: the per-entity reduce-only GMB (``gmb_mode="entity_reduce"``,
    ``rho = 1``, ``gmb_c = 1``), which scales an auxiliary gradient down, never up, towards the
    entity's own moving-average main-task magnitude. Every other v3 switch is off by default.
    ``pmtrec-v2`` (``presets.V3_OFF``) keeps v2's behaviour (GMB off, ``rho = 0``); the presets
    ``pmtrec-no-gmb`` and ``pmtrec-gmb`` switch GMB off or back to v2's per-side rule.

    Uniform weights have one spelling, ``weight_mode="uniform"``; ``tau`` is always finite. A
    configuration written with ``tau: .inf`` (the old spelling) is converted on load with a
    notice (``upgrade``).
    """

    tau: float = Field(
        1.0, gt=0, description="softmax temperature on the relative magnitudes r_x^k (finite; "
        "uniform weights are weight_mode='uniform')"
    )
    weight_mode: Literal["personalized", "shared", "uniform"] = Field(
        "personalized", description="per-entity softmax weights, their per-side batch mean over "
        "entities with the same task set, or uniform 1/|A_x|"
    )
    rho: float = Field(
        1.0, ge=0, le=1, description="GMB strength, 0 = off: with gmb_mode='side' the factor "
        "(1 - rho) + rho T^s / m^{k,s} (1 = the specification's MetaBalance-like rule); with "
        "'entity_reduce' (1 - rho) + rho min(1, gmb_c mag_x / n_x^k)"
    )
    gmb_target: Literal["main", "mean", "max"] = Field(
        "main", description="GMB target magnitude T^s per side: the main task's, or the mean / max "
        "over the tasks on that side"
    )
    ema_decay: float = Field(
        0.9, ge=0, lt=1, description="decay of the moving average of the task magnitudes m^{k,s}"
    )
    align: bool = Field(
        True, description="TF alignment: project out an auxiliary gradient's component that "
        "conflicts with the main task's"
    )
    schedule: Literal["none", "linear", "cosine"] = Field(
        "linear", description="TF schedule beta(t) that raises the main task's logit over training"
    )
    beta_max: float = Field(2.0, ge=0, description="the schedule's final value of beta")
    horizon: float = Field(10.0, gt=0, description="epochs over which beta(t) rises from 0 to beta_max")
    normalize: bool = Field(False, description="drop the |A_x| factor of the combination (step 6)")
    focus_everywhere: bool = Field(
        False, description="v3: align and schedule every entity with an auxiliary gradient, using its "
        "moving-average main gradient where the step has none (mtl/pmtrec/memory.py)"
    )
    gmb_mode: Literal["side", "entity_reduce"] = Field(
        "entity_reduce", description="GMB rule: per (task, side) towards T^s (v2), or v3's per-entity "
        "reduce-only rule min(1, gmb_c * mag_x / n_x^k) with mag_x the entity's moving-average main "
        "magnitude (the default)"
    )
    gmb_c: float = Field(
        1.0, gt=0, description="v3 entity_reduce GMB: the allowed auxiliary / main magnitude ratio"
    )
    memory_decay: float = Field(
        0.9, ge=0, lt=1, description="v3: decay of each entity's moving-average main gradient and magnitude"
    )
    usefulness: Literal["off", "meta_cos", "meta_spsa"] = Field(
        "off", description="v3: per (task, side) scales lambda from the meta loss; meta_cos: lambda += "
        "usefulness_lr * mean cos(meta gradient, task gradient) over the rows both touched; meta_spsa: "
        "simultaneous perturbation on the meta loss's change over windows of spsa_every steps"
    )
    moment_balance: bool = Field(
        False, description="v3 candidate (d): rescale each auxiliary gradient per row and coordinate to "
        "the main task's root mean square, from per-(row, task) second moments (MTAdam-like), so its "
        "size cannot shrink the main task's Adam steps on shared rows"
    )
    moment_decay: float = Field(
        0.999, gt=0, lt=1, description="v3 moment_balance: decay of the per-task second moments"
    )
    spsa_every: int = Field(25, ge=1, description="v3 meta_spsa: steps per perturbation window")
    spsa_eps: float = Field(0.3, gt=0, description="v3 meta_spsa: perturbation of log lambda")
    spsa_lr: float = Field(0.2, gt=0, description="v3 meta_spsa: largest step of log lambda per cycle")
    usefulness_lr: float = Field(0.01, gt=0, description="v3: step size eta of the usefulness scales")
    delta: Literal["off", "learned", "permuted"] = Field(
        "off", description="v3: per-entity deviations delta_x^k (weight factor exp(delta)) learned from "
        "cos(meta gradient, task gradient) per entity; permuted: the same table read through a "
        "per-epoch permutation of the entities within each side (the control)"
    )
    delta_lr: float = Field(0.1, gt=0, description="v3: step size of the per-entity deviations")
    delta_decay: float = Field(
        0.01, ge=0, lt=1, description="v3: shrinkage of a deviation towards 0 at each of its updates"
    )
    delta_max: float = Field(1.0, gt=0, description="v3: bound of the deviations, |delta| <= delta_max")
    lambda_max: float = Field(2.0, gt=0, description="v3: upper bound of the usefulness scales (lower: 0)")
    norm_mode: Literal["raw", "sqrt_count", "count", "fitted"] = Field(
        "raw", description="v3: the magnitude signal, n_x^k (raw, v2) or n_x^k / c^a with c the "
        "entity's occurrences in the task's batch: a = 1/2 (sqrt_count), 1 (count) or fitted per "
        "task and side (fitted; mtl/pmtrec/signal.py)"
    )

    level_select: bool = Field(
        False, description="v4 candidate 1 (a): a level per auxiliary task, chosen inside the run "
        "before each epoch of level_at by short branched continuations scored on the meta split's "
        "NDCG@20 (successive halving; mtl/pmtrec/levels.py, train/level_selection.py)"
    )
    level_values: list[float] = Field(
        default_factory=lambda: list(DEFAULT_LEVEL_VALUES), min_length=1,
        description="v4 level_select: the candidate levels of an auxiliary task (1 = as trained, 0 = "
        "off on the shared rows)"
    )
    level_at: list[int] = Field(
        default_factory=lambda: list(DEFAULT_LEVEL_AT), min_length=1,
        description="v4 level_select: the epochs (finished, counted from 1) after which a round of "
        "selection runs"
    )
    level_branch_epochs: int = Field(
        1, ge=1, description="v4 level_select: epochs each surviving branch trains per halving stage"
    )
    level_scope: Literal["auto", "task", "joint"] = Field(
        "auto", description="v4 level_select: one auxiliary task at a time (task), one shared level "
        "(joint), or task with at most two auxiliary tasks and joint otherwise (auto)"
    )
    task_adam: bool = Field(
        False, description="v4 candidate 1 (b): each task's gradient replaced by its own per-(row, task) "
        "Adam direction before the combination, and the representation tables stepped by SGD at the "
        "run's lr, so an auxiliary task's size cannot shrink the main task's steps (mtl/pmtrec/task_adam.py)"
    )

    #: the parameters added after the v3 grid's runs were named, at their off values
    name_neutral: ClassVar[Mapping[str, Any]] = {
        "task_adam": False,
        "level_select": False,
        "level_values": list(DEFAULT_LEVEL_VALUES),
        "level_at": list(DEFAULT_LEVEL_AT),
        "level_branch_epochs": 1,
        "level_scope": "auto",
    }

    @field_validator("level_values")
    @classmethod
    def _levels_valid(cls, v: list[float]) -> list[float]:
        if any(not math.isfinite(x) or x < 0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"expected distinct finite levels >= 0, got {v}")
        return v

    @field_validator("level_at")
    @classmethod
    def _level_at_valid(cls, v: list[int]) -> list[int]:
        if any(e < 1 for e in v) or sorted(set(v)) != v:
            raise ValueError(f"expected increasing epochs >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _one_preconditioning(self) -> PMTRecParams:
        if self.task_adam and self.moment_balance:
            raise ValueError(
                "task_adam and moment_balance are alternatives (both rewrite the task gradients); set one"
            )
        return self

    @classmethod
    def upgrade(cls, params: Mapping[str, Any], method: str = "pmtrec") -> dict[str, Any]:
        """Convert the old spellings: ``tau = inf`` -> ``weight_mode = "uniform"`` (tau dropped).

        ``tau = inf`` made every weight uniform whatever ``weight_mode`` said, so the conversion
        keeps the same behaviour; a notice is logged. ``main_task`` (always 0) is dropped.
        """
        out = dict(params)
        tau = out.get("tau")
        if isinstance(tau, float) and math.isinf(tau) and tau > 0:
            log.warning(
                "method %r: tau=inf is the old spelling of uniform weights; read as "
                "weight_mode='uniform' (tau removed)", method,
            )
            del out["tau"]
            out["weight_mode"] = "uniform"
        if out.get("main_task") == 0 and not isinstance(out.get("main_task"), bool):
            log.warning("method %r: main_task is gone (task 0 is always the main task); dropped", method)
            del out["main_task"]
        return out
