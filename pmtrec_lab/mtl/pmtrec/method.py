"""PMTRec: personalized multi-task training (Yang et al., "Personalized Multi-task Training for
Recommender System", arXiv 2407.21364, IEEE BigData 2024).

Implements steps 2-6 of ``docs/pmtrec-method.md`` on the per-entity task gradients that the
trainer extracts (step 1). Notation: entity x (a user or item row), side s(x), task 0 the main
task, A_x the tasks that touched x in this step, g_x^k = dL_k/dz_x,
n_x^k = ||g_x^k||.

2'. (v3, ``norm_mode``) the signal may first be freed of batch frequency: n_x^k is replaced by
   ``n_x^k / (c_x^k)^a``, c the entity's occurrences in task k's batch (``_frequency``).
2. Task magnitudes ``m^{k,s}``: an exponential moving average (``ema_decay``) of the mean of
   n_x^k over the entities of side s that task k touched; it starts at the first batch's mean,
   is updated before use, and keeps its value when task k touched no entity of side s.
   Relative magnitudes ``r_x^k = n_x^k / m^{k,s(x)}``.
3. Gradient Magnitude Balancing (GMB): ``gb_x^k = g_x^k * ((1 - rho) + rho * T^s / m^{k,s})``.
4. Weights: personalized ``w_x = softmax_{k in A_x}(r_x^k / tau + beta(t) [k = 0])``;
   shared: the batch mean of the personalized weights over the entities of the same side
   *with the same task set A_x* (the spec's "per-side batch mean renormalized over A_x",
   made exact: averaging over entities with different A_x would make shared weights differ
   from uniform even when the personalized ones are uniform, and would shrink rare tasks;
   with a single task set per side the two readings coincide); uniform: all logits 0
   (beta(t) still applies: uniform with the schedule off is exactly 1 / |A_x|).
5. Task Focusing: (a) alignment: for every auxiliary k with ``<gb_x^k, g_x^0> < 0`` (only
   entities that have a main-task gradient) the conflicting component along g_x^0 is
   projected out; (b) schedule ``beta(t)``, t = ``ctx.fractional_epoch``, from 0 to
   ``beta_max`` over ``horizon`` epochs (linear or cosine).
6. ``G_x = |A_x| * sum_k w_x^k gb_x^k`` (``normalize=True`` drops the |A_x| factor).

Everything is a handful of batched ops: GMB scales, weights and the alignment projection are
per-(entity, task) coefficients on the raw gradients, computed from the per-entity Gramian
(``_gram.entity_gram``, one ``bmm``), and the result is one pass ``sum_k coef[:, k] * g^k``.
No Python loop over entities and no host sync in ``combine`` (except shared mode with more than
12 tasks, which compacts its group codes with ``torch.unique``).

The defaults are ``PMTRecParams``' (the one place they are written); the named ablation
configurations are presets (``presets.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from pmtrec_lab.mtl._gram import (
    combine_rows,
    conflict_projection,
    entity_gram,
    side_onehot,
    side_table,
    task_major_stats,
)
from pmtrec_lab.mtl._magnitude import SideMagnitudeEMA
from pmtrec_lab.mtl.base import CombineResult, StepContext, WeightingMethod, register
from pmtrec_lab.mtl.params import MAIN_TASK, MethodParams
from pmtrec_lab.mtl.pmtrec.deviations import EntityDeviation
from pmtrec_lab.mtl.pmtrec.memory import MainGradientMemory
from pmtrec_lab.mtl.pmtrec.meta_spsa import MetaLossSPSA
from pmtrec_lab.mtl.pmtrec.moments import TaskMoments
from pmtrec_lab.mtl.pmtrec.signal import FrequencyExponent, frequency_free

__all__ = ["PMTRec", "PMTRecParams", "schedule_beta"]

log = logging.getLogger("pmtrec_lab.mtl")

WEIGHT_MODES = ("personalized", "shared", "uniform")
GMB_TARGETS = ("main", "mean", "max")
SCHEDULES = ("none", "linear", "cosine")


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
        "moving-average main gradient where the step has none (mtl/_entity_memory.py)"
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
        "task and side (fitted; mtl/_frequency.py)"
    )

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


NUM_SIDES = 2  # 0 = user, 1 = item


def schedule_beta(t: float, schedule: str, beta_max: float, horizon: float) -> float:
    """Task Focusing schedule beta(t) at fractional epoch ``t`` (spec step 5b).

    ``none``: 0; ``linear``: beta_max * min(t / H, 1); ``cosine``:
    beta_max * (1 - cos(pi * min(t / H, 1))) / 2. Negative t counts as 0.
    """
    if schedule == "none":
        return 0.0
    frac = min(max(float(t), 0.0) / horizon, 1.0)
    if schedule == "linear":
        return beta_max * frac
    if schedule == "cosine":
        return beta_max * (1.0 - math.cos(math.pi * frac)) / 2.0
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _group_mean(w: torch.Tensor, active: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Shared weights: each entity gets the batch mean of the personalized weights over the
    entities of its side with the same task set A_x. ``w`` and ``active`` are task-major
    [K, E]; returns [K, E] (columns still sum to 1 over A_x). Groups are (side, A_x) codes;
    one ``index_add_`` each for sums and counts."""
    k, n_ent = w.shape
    if k <= 12:
        bits = 2 ** torch.arange(k, device=w.device)
        gid = side * (1 << k) + (active.long() * bits.unsqueeze(1)).sum(0)  # no integer matmul on CUDA
        n_groups = NUM_SIDES << k
    else:  # many tasks: compact the codes (one host sync)
        codes = torch.cat([side.unsqueeze(0), active.long()], dim=0).T
        _, gid = torch.unique(codes, dim=0, return_inverse=True)
        n_groups = int(gid.max()) + 1
    sums = torch.zeros(k, n_groups, dtype=w.dtype, device=w.device).index_add_(1, gid, w)
    counts = torch.zeros(n_groups, dtype=w.dtype, device=w.device).index_add_(
        0, gid, torch.ones(n_ent, dtype=w.dtype, device=w.device)
    )
    return (sums / counts.clamp_min(1))[:, gid]


@register
class PMTRec(WeightingMethod):
    """PMTRec (Yang et al., arXiv 2407.21364): per-entity task weights from relative gradient
    magnitudes, Gradient Magnitude Balancing and Task Focusing.

    Parameters: ``PMTRecParams`` (defaults, bounds and meaning of each); the named
    configurations (ablations) are presets in ``presets.py``.

    ``head_weights[k]``: the mean, over the entities task k touched, of the multiplier the
    combination applies to task k's weight, ``|A_x| w_x^k`` (``w_x^k`` with
    ``normalize=True``); GMB and alignment act on representation gradients only, not heads.
    1 for a task that touched no entity this step.

    Diagnostics (detached): ``entity_weights`` [E, K] (w_x^k, 0 where inactive);
    ``norm_ratio_before`` / ``norm_ratio_after`` [2, K] (m^{k,s}/m^{0,s} before and after GMB,
    NaN where a magnitude is undefined); ``magnitude`` [2, K] (m^{k,s}); ``beta`` (CPU scalar);
    ``conflict_fraction`` [K] (among entities touched by k that have a main-task gradient, the
    fraction with cos(g^k, g^0) < 0: where alignment fires); ``cos_main`` [E, K] (NaN where
    task k or the main task did not touch the entity); ``cos_main_after`` [E, K] (the same
    after TF alignment: >= 0 where aligned; equal to ``cos_main`` with ``align=False``);
    ``magnitude_signal`` [E, K] (s_x^k, the norm the weights use: n_x^k unless ``norm_mode``);
    ``focus_share`` [K] (share of task k's touched rows that focusing reaches: a main gradient,
    or with ``focus_everywhere`` a memory); ``gmb_reduce`` [K] (mean reduce-only GMB factor, with
    ``gmb_mode="entity_reduce"``); ``norm_exponent`` [2, K] (with ``norm_mode="fitted"``).
    The [E, K] tensors are transposed views of task-major [K, E] tables (see ``_gram``).
    """

    name = "pmtrec"
    family: ClassVar[str] = "pmtrec"
    summary: ClassVar[str] = "PMTRec (Yang et al., arXiv 2407.21364): per-entity weights, GMB, Task Focusing"
    Params: ClassVar[type[MethodParams]] = PMTRecParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        p = self.hparams
        assert isinstance(p, PMTRecParams)
        self.tau = p.tau
        self.weight_mode = p.weight_mode
        self.rho = p.rho
        self.gmb_target = p.gmb_target
        self.ema_decay = p.ema_decay
        self.align = p.align
        self.schedule = p.schedule
        self.beta_max = p.beta_max
        self.horizon = p.horizon
        self.normalize = p.normalize
        # State: per (side, task) magnitudes m^{k,s} and whether each has been initialized.
        self._ema = SideMagnitudeEMA(NUM_SIDES, num_tasks, p.ema_decay, owner="pmtrec")
        self.norm_mode = p.norm_mode
        self.focus_everywhere = p.focus_everywhere
        self.gmb_mode = p.gmb_mode
        self.gmb_c = p.gmb_c
        # the reference gradients are read by focusing everywhere only (the GMB reads magnitudes)
        self._memory = MainGradientMemory(p.memory_decay, owner="pmtrec", keep_ref=p.focus_everywhere)
        self.usefulness = p.usefulness
        self.usefulness_lr = p.usefulness_lr
        self.lambda_max = p.lambda_max
        # v3 usefulness scales lambda_{k,s} [2, K], initial 1 (the main task's column stays 1)
        self.lam = torch.ones(NUM_SIDES, num_tasks)
        self._moments = TaskMoments(p.moment_decay) if p.moment_balance else None
        self.spsa_every = p.spsa_every
        self._spsa = (
            MetaLossSPSA(NUM_SIDES, num_tasks, p.spsa_eps, p.spsa_lr, p.lambda_max)
            if p.usefulness == "meta_spsa"
            else None
        )
        self.delta = p.delta
        self._deviation = (
            EntityDeviation(p.delta, p.delta_lr, p.delta_decay, p.delta_max) if p.delta != "off" else None
        )
        self._exponent = FrequencyExponent(NUM_SIDES, num_tasks, p.ema_decay)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name!r}, num_tasks={self.num_tasks}, {args})"

    def beta(self, t: float) -> float:
        """beta(t) of this configuration at fractional epoch ``t``."""
        return schedule_beta(t, self.schedule, self.beta_max, self.horizon)

    # Step 2 ---------------------------------------------------------------------------
    def _update_magnitudes(
        self, norms: torch.Tensor, act: torch.Tensor, onehot: torch.Tensor
    ) -> torch.Tensor:
        """EMA update of m^{k,s} from this batch (before use); returns m [2, K].

        The batch value of (side s, task k) is the mean of n_x^k over the entities of side s
        that task k touched; it starts at the first batch's value and keeps its value when
        task k touched no entity of side s (``_magnitude.SideMagnitudeEMA``, shared with
        MetaBalance). ``norms`` and ``act`` (0/1 float) are task-major [K, E], ``onehot`` [E, 2].
        """
        return self._ema.update(norms, act, onehot)

    @property
    def _initialized(self) -> torch.Tensor:
        return self._ema.initialized

    # Step 3 ---------------------------------------------------------------------------
    def _gmb_scale(self, m: torch.Tensor) -> torch.Tensor:
        """Gradient Magnitude Balancing: per (side, task) factor ``(1-rho) + rho T^s / m^{k,s}``.

        This is MetaBalance's rule (He et al., "MetaBalance: Improving Multi-Task
        Recommendations via Adapting Gradient Magnitudes of Auxiliary Tasks", WWW 2022:
        ``g_aux * (r * ||g_main|| / ||g_aux|| + (1 - r))`` with relax factor r = 0.7 and
        moving-average decay 0.9, its "adapt" strategy). Ours differs in where the magnitudes
        are measured: MetaBalance keeps one moving average of the norm of each task's gradient
        per shared parameter tensor; here m^{k,s} is a moving average of the *mean per-row*
        norm over the entities of side s (users or items) that task k touched, so the factor
        is one number per (task, side) applied to every row, and the target T^s may be the
        main task's magnitude (MetaBalance) or the mean/max over the tasks on that side.
        ``rho`` plays the role of MetaBalance's relax factor. Where the target or a task's
        magnitude is undefined (never touched) or zero, the factor is 1.
        """
        ones = torch.ones_like(m)
        if self.rho == 0.0:
            return ones
        init = self._initialized.to(m.device)
        if self.gmb_target == "main":
            target = m[:, MAIN_TASK]
            has_target = init[:, MAIN_TASK]
        elif self.gmb_target == "mean":
            cnt = init.sum(1)
            target = (m * init).sum(1) / cnt.clamp_min(1)
            has_target = cnt > 0
        else:  # max
            target = m.masked_fill(~init, 0.0).amax(1)
            has_target = init.any(1)
        valid = init & (m > 0) & has_target.unsqueeze(1)
        ratio = target.unsqueeze(1) / m.clamp_min(torch.finfo(m.dtype).tiny)
        return torch.where(valid, (1.0 - self.rho) + self.rho * ratio, ones)

    # Step 4 ---------------------------------------------------------------------------
    def _weights(
        self, r: torch.Tensor, act: torch.Tensor, active: torch.Tensor, side: torch.Tensor, beta: float
    ) -> torch.Tensor:
        """Task weights, task-major [K, E] (columns sum to 1 over A_x, 0 outside it).

        ``r`` [K, E] (its memory may be reused), ``act`` its 0/1 float mask, ``active`` bool.
        """
        if self.weight_mode == "uniform":
            logits = torch.zeros_like(r)
        else:
            logits = r.mul_(1.0 / self.tau)
        if beta != 0.0:  # only where the main task is active: inactive logits stay 0 <= active ones
            logits[MAIN_TASK].add_(act[MAIN_TASK], alpha=beta)
        # Softmax over A_x, written out (torch.softmax over a dim of size K ~ 3 is slow).
        # Logits are >= 0 where active and 0 where inactive, so the max over all tasks equals
        # the max over A_x (or 0): a safe shift. Inactive entries are zeroed after exp; an
        # entity without tasks gets 0.
        ex = (logits - logits.amax(dim=0)).exp_().mul_(act)
        w = ex.div_(ex.sum(dim=0).clamp_min(torch.finfo(ex.dtype).tiny))
        if self.weight_mode == "shared":
            w = _group_mean(w, active, side)
        return w

    # v3 step 3'' ------------------------------------------------------------------------
    @property
    def needs_meta(self) -> bool:
        return self.usefulness == "meta_cos" or self.delta != "off"

    @property
    def meta_value_every(self) -> int | None:
        return self.spsa_every if self._spsa is not None else None

    def observe_meta_loss(self, value: float, ctx: StepContext) -> None:
        if self._spsa is not None:
            self._spsa.observe(value, ctx.generator)

    def _meta_cosines(
        self, grads: torch.Tensor, act: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos(g_meta,x, g_x^k) [K, E] (0 where undefined) and where it is defined (0/1 [K, E]):
        rows touched by task k and the meta loss, both gradients non-zero."""
        if ctx.meta_grads is None or ctx.meta_active is None:
            raise ValueError(
                f"method {self.name!r}: usefulness={self.usefulness!r}, delta={self.delta!r} need the "
                "meta loss's gradients (ctx.meta_grads): train with data.meta_split=true"
            )
        g_meta = ctx.meta_grads.to(grads.dtype)
        dots = torch.einsum("ked,ed->ke", grads, g_meta)
        den = grads.norm(dim=2) * g_meta.norm(dim=1).unsqueeze(0)
        both = act * ctx.meta_active.to(grads.dtype).unsqueeze(0) * (den > 0).to(grads.dtype)
        cos = dots / den.clamp_min(torch.finfo(grads.dtype).tiny) * both
        return cos, both

    def _update_usefulness(
        self, cos: torch.Tensor, both: torch.Tensor, onehot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """lambda_{k,s} += eta * mean cos(g_meta,x, g_x^k) over side s's rows touched by task k and
        the meta loss, clipped to [0, lambda_max]; updated before use; the main task's stays 1.
        Returns (lambda [2, K], the batch mean cosines [2, K], NaN where no row qualifies)."""
        n = both @ onehot  # [K, 2]
        mean = ((cos @ onehot) / n.clamp_min(1)).T  # [2, K]
        lam = self.lam.to(device=cos.device, dtype=cos.dtype)
        lam = torch.where(n.T > 0, lam + self.usefulness_lr * mean, lam).clamp(0.0, self.lambda_max)
        lam[:, MAIN_TASK] = 1.0
        self.lam = lam
        return lam, torch.where(n.T > 0, mean, torch.full_like(mean, float("nan")))

    def _entity_rows(self, ctx: StepContext, side: torch.Tensor, what: str) -> tuple[torch.Tensor, int]:
        """The step's global table rows (user id, or num_users + item id) and the table size, for
        the per-entity state tables of the v3 pieces (``what`` names the piece asking)."""
        if ctx.entity_ids is None or ctx.num_entities is None:
            raise ValueError(
                f"method {self.name!r}: {what} needs ctx.entity_ids and ctx.num_entities (set by "
                "the trainer)"
            )
        return self._memory.rows(ctx.entity_ids, side, ctx.num_entities), sum(ctx.num_entities)

    # The step -------------------------------------------------------------------------
    @torch.no_grad()
    def combine(
        self,
        grads: torch.Tensor,
        active: torch.Tensor,
        side: torch.Tensor,
        losses: torch.Tensor,
        ctx: StepContext,
    ) -> CombineResult:
        k_tasks, n_ent, _ = grads.shape
        self.check_num_tasks(grads)
        if tuple(active.shape) != (n_ent, k_tasks):
            raise ValueError(f"active must be [E, K] = {(n_ent, k_tasks)}, got {tuple(active.shape)}")
        if tuple(side.shape) != (n_ent,):
            raise ValueError(f"side must be [E] = ({n_ent},), got {tuple(side.shape)}")
        main = MAIN_TASK
        dtype = grads.dtype
        tiny = torch.finfo(dtype).tiny
        # Per-(task, entity) tables are task-major [K, E] (see _gram); diagnostics are
        # returned entity-major [E, K] (transposed views).
        active_t = active.bool().T  # [K, E]
        act = active_t.to(dtype)  # 0/1 mask, converted once
        side = side.long()
        is_item = side == 1
        onehot = side_onehot(side, dtype, NUM_SIDES)  # [E, 2]
        if self._moments is not None:  # v3 candidate (d): every task at the main task's scale
            rows_m, num_rows = self._entity_rows(ctx, side, "moment_balance")
            grads = self._moments.balance(grads, active_t, rows_m, num_rows)

        gram = entity_gram(grads)  # [E, K, K], the only Gramian of the step
        norms, inner = task_major_stats(gram, main)  # n_x^k and <g_x^k, g_x^0>, [K, E]

        signal = norms
        exponent: torch.Tensor | None = None
        if self.norm_mode != "raw":  # v3 step 2': frequency-free magnitudes
            if ctx.counts is None:
                raise ValueError(
                    f"method {self.name!r}: norm_mode={self.norm_mode!r} needs ctx.counts (the "
                    "entities' occurrences per task, set by train_step)"
                )
            counts = ctx.counts.T.to(dtype)  # [K, E]
            if self.norm_mode == "fitted":
                exponent = self._exponent.update(norms, counts, act, onehot)
            signal = frequency_free(norms, counts, self.norm_mode, is_item, exponent)
        m = self._update_magnitudes(signal, act, onehot)  # step 2, [2, K]
        r = signal / side_table(m, is_item).clamp_min(tiny)  # r_x^k (0 where inactive)
        has_main = active_t[main]
        ref = ref_mag = virtual = None
        if self._uses_memory:  # v3: per-entity memory
            rows, num_rows = self._entity_rows(ctx, side, "focus_everywhere / gmb_mode='entity_reduce'")
            ref, ref_mag, known = self._memory.update(rows, grads[main], has_main, num_rows)
            if self.focus_everywhere:  # rows with auxiliary gradients, a reference, no main gradient
                virtual = known & ~has_main & active_t.any(dim=0)

        side_scale = self._gmb_scale(m) if self.gmb_mode == "side" else torch.ones_like(m)  # step 3
        entity_scale = None
        if self.gmb_mode == "entity_reduce" and self.rho > 0:  # v3 step 3': reduce-only, per entity
            assert ref_mag is not None
            allowed = self.gmb_c * ref_mag.unsqueeze(0)  # [1, E]
            cut = torch.where(norms > allowed, allowed / norms.clamp_min(tiny), torch.ones_like(norms))
            cut = torch.where(known.unsqueeze(0), cut, torch.ones_like(cut))
            cut[main] = 1.0
            entity_scale = (1.0 - self.rho) + self.rho * cut

        beta = self.beta(ctx.fractional_epoch)  # step 5b
        act_w, active_w = act, active_t
        if virtual is not None:  # v3 step 5': the main task takes part through its memory
            active_w = active_t.clone()
            active_w[main] |= virtual
            act_w = active_w.to(dtype)
            r[main] = torch.where(virtual, torch.ones_like(r[main]), r[main])  # typical magnitude
        w = self._weights(r, act_w, active_w, side, beta)  # step 4, [K, E]

        # Step 6 (+5a) as coefficients on the raw gradients: G_x = sum_k coef[k, x] g_x^k.
        mult = w if self.normalize else w * act_w.sum(dim=0)
        side_gmb = self.rho > 0 and self.gmb_mode == "side"
        coef = mult * side_table(side_scale, is_item) if side_gmb else mult.clone()
        if entity_scale is not None:
            coef = coef * entity_scale
        lam = meta_cos = used_delta = None
        if self.needs_meta:
            cos_meta, both_meta = self._meta_cosines(grads, act, ctx)
        if self.usefulness == "meta_cos":  # v3 step 3'', candidate (a)
            lam, meta_cos = self._update_usefulness(cos_meta, both_meta, onehot)
            coef = coef * side_table(lam, is_item)
        elif self._spsa is not None:  # v3 step 3'', candidate (c): this window's scales
            self._spsa.mark_touched((act @ onehot).T > 0)
            lam = self._spsa.center().to(device=grads.device, dtype=dtype)
            coef = coef * side_table(self._spsa.applied().to(device=grads.device, dtype=dtype), is_item)
        if self._deviation is not None:  # v3: per-entity deviations, exp(delta_x^k)
            rows, num_rows = self._entity_rows(ctx, side, f"delta={self.delta!r}")
            self._deviation.update(rows, cos_meta, both_meta > 0, num_rows)
            used_delta = self._deviation.applied(rows, ctx.num_entities, ctx.epoch, ctx.generator).to(dtype)
            coef = coef * used_delta.exp()
        p: torch.Tensor | None = None
        p_ref: torch.Tensor | None = None
        if self.align:
            # gb^k -> gb^k - (<gb^k, g^0>/||g^0||^2) g^0 where negative: adds to g^0's coefficient.
            p = conflict_projection(inner, main, has_main)
            coef[main] -= (coef * p).sum(dim=0)
            if virtual is not None:  # the same against the memory where the step has no g^0
                assert ref is not None
                inner_ref = torch.einsum("ked,ed->ke", grads, ref)
                inner_ref[main] = (ref * ref).sum(dim=1)
                p_ref = conflict_projection(inner_ref, main, virtual)
        combined = combine_rows(coef, grads)
        if p_ref is not None:
            assert ref is not None
            combined -= (coef * p_ref).sum(dim=0).unsqueeze(1) * ref
        reach = has_main if virtual is None else has_main | virtual

        count_k = act.sum(dim=1)
        head = torch.where(count_k > 0, mult.sum(dim=1) / count_k.clamp_min(1), torch.ones_like(count_k))

        # Diagnostics.
        m0 = m[:, main : main + 1]
        init = self._initialized
        defined = init & init[:, main : main + 1] & (m0 > 0)
        nan = torch.full_like(m, float("nan"))
        m_after = m * side_scale
        both = act * act[main]  # 1 where task k and the main task touched the entity, else 0
        cos = inner / (norms * norms[main]).clamp_min(tiny)
        # NaN where undefined without a bool-mask kernel (slow on CPU): x * 1 / 1 = x exactly,
        # x * 0 / 0 = NaN.
        cos = cos.mul_(both).div_(both)
        # After alignment a conflicting g^k becomes orthogonal to g^0 (cosine 0) and the others
        # are unchanged (GMB scales do not change directions): cos_after = max(cos, 0), NaN kept.
        cos_after = cos if p is None else cos.clamp_min(0)
        conflict = (cos < 0).sum(dim=1).to(dtype) / both.sum(dim=1).clamp_min(1)  # NaN < 0: False
        diagnostics = {
            "entity_weights": w.T,
            "norm_ratio_before": torch.where(defined, m / m0.clamp_min(tiny), nan),
            "norm_ratio_after": torch.where(
                defined, m_after / m_after[:, main : main + 1].clamp_min(tiny), nan
            ),
            "magnitude": m.clone(),
            "beta": torch.tensor(beta, dtype=torch.float64),
            "conflict_fraction": conflict,
            "cos_main": cos.T,
            "cos_main_after": cos_after.T,
        }
        diagnostics["magnitude_signal"] = signal.T  # s_x^k (n_x^k with norm_mode="raw")
        if exponent is not None:
            diagnostics["norm_exponent"] = exponent.clone()
        # Share of each task's row-updates that focusing reaches (a main gradient or a memory).
        diagnostics["focus_share"] = (act * reach.to(dtype)).sum(dim=1) / act.sum(dim=1).clamp_min(1)
        if entity_scale is not None:
            diagnostics["gmb_reduce"] = (entity_scale * act).sum(dim=1) / act.sum(dim=1).clamp_min(1)
        if lam is not None:  # where the task touched the side in this step (else NaN)
            touched = (act @ onehot).T > 0  # [2, K]
            diagnostics["usefulness_scale"] = torch.where(touched, lam, torch.full_like(lam, float("nan")))
        if meta_cos is not None:
            diagnostics["meta_cos"] = meta_cos
        if used_delta is not None:  # over the rows each task touched, per side; NaN where none
            n_side = act @ onehot  # [K, 2]
            undefined = torch.full_like(n_side, float("nan"))
            for key, values in (("delta_mean", used_delta), ("delta_abs", used_delta.abs())):
                mean = (values * act) @ onehot / n_side.clamp_min(1)
                diagnostics[key] = torch.where(n_side > 0, mean, undefined).T
        return CombineResult(combined=combined, head_weights=head, diagnostics=diagnostics)

    # State ----------------------------------------------------------------------------
    @property
    def _uses_memory(self) -> bool:
        """Focusing everywhere, or a reduce-only GMB that is on (with rho = 0 it would not be read)."""
        return self.focus_everywhere or (self.gmb_mode == "entity_reduce" and self.rho > 0)

    def state_dict(self) -> dict[str, Any]:
        state = self._ema.state_dict()
        if self.norm_mode == "fitted":
            state["norm_exponent"] = self._exponent.state_dict()
        if self._uses_memory:
            state["main_memory"] = self._memory.state_dict()
        if self.usefulness == "meta_cos":
            state["usefulness_scale"] = self.lam.detach().clone()
        if self._spsa is not None:
            state["usefulness_spsa"] = self._spsa.state_dict()
        if self._deviation is not None:
            state["entity_deviation"] = self._deviation.state_dict()
        if self._moments is not None:
            state["task_moments"] = self._moments.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        exponent = state.pop("norm_exponent", None)
        memory = state.pop("main_memory", None)
        lam = state.pop("usefulness_scale", None)
        spsa = state.pop("usefulness_spsa", None)
        if (spsa is None) != (self._spsa is None):
            raise ValueError(
                f"method {self.name!r}: saved state {'lacks' if spsa is None else 'has'} SPSA usefulness "
                f"scales, but usefulness is {self.usefulness!r}"
            )
        if spsa is not None and self._spsa is not None:
            self._spsa.load_state_dict(spsa)
        deviation = state.pop("entity_deviation", None)
        moments = state.pop("task_moments", None)
        if (moments is None) != (self._moments is None):
            raise ValueError(
                f"method {self.name!r}: saved state {'lacks' if moments is None else 'has'} per-task "
                f"second moments, but moment_balance is {self._moments is not None}"
            )
        if moments is not None and self._moments is not None:
            self._moments.load_state_dict(moments)
        if (deviation is None) != (self._deviation is None):
            raise ValueError(
                f"method {self.name!r}: saved state {'lacks' if deviation is None else 'has'} "
                f"per-entity deviations, but delta is {self.delta!r}"
            )
        if deviation is not None and self._deviation is not None:
            self._deviation.load_state_dict(deviation)
        if (lam is None) != (self.usefulness != "meta_cos"):
            raise ValueError(
                f"method {self.name!r}: saved state {'lacks' if lam is None else 'has'} usefulness "
                f"scales, but usefulness is {self.usefulness!r}"
            )
        if lam is not None:
            lam = torch.as_tensor(lam)
            if tuple(lam.shape) != (NUM_SIDES, self.num_tasks):
                shape = (NUM_SIDES, self.num_tasks)
                raise ValueError(f"method {self.name!r}: usefulness scales must be {shape}")
            self.lam = lam.clone()
        unread = self.gmb_mode == "entity_reduce" and self.rho == 0 and not self._uses_memory
        if memory is not None and unread:
            memory = None  # saved before rho = 0 stopped keeping the (unread) memory: nothing to restore
        if (memory is None) == self._uses_memory:
            raise ValueError(
                f"method {self.name!r}: saved state {'lacks' if memory is None else 'has'} the "
                "per-entity main-gradient memory, which this configuration "
                f"{'uses' if self._uses_memory else 'does not use'}"
            )
        if memory is not None:  # the check above: only when this configuration uses it
            self._memory.load_state_dict(memory)
        if (exponent is None) != (self.norm_mode != "fitted"):
            raise ValueError(
                f"method {self.name!r}: saved state {'lacks' if exponent is None else 'has'} the "
                f"fitted norm exponent, but norm_mode is {self.norm_mode!r}"
            )
        self._ema.load_state_dict(state)
        if exponent is not None:
            self._exponent.load_state_dict(exponent)

    def to(self, device: torch.device | str) -> PMTRec:
        self._ema.to(device)
        self._exponent.to(device)
        self._memory.to(device)
        self.lam = self.lam.to(device)
        if self._deviation is not None:
            self._deviation.to(device)
        if self._moments is not None:
            self._moments.to(device)
        return self
