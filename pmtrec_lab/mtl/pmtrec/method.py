"""PMTRec: personalized multi-task training (Yang et al., "Personalized Multi-task Training for
Recommender System", arXiv 2407.21364, IEEE BigData 2024), as a sequence of stages.

Implements steps 2-6 of ``docs/pmtrec-method.md`` on the per-entity task gradients that the
trainer extracts (step 1). Notation: entity x (a user or item row), side s(x), task 0 the main
task, A_x the tasks that touched x in this step, g_x^k = dL_k/dz_x, n_x^k = ||g_x^k||. Each step
is a stage of this package (``step.Stage``), one module each; ``PMTRec.STAGES`` lists them in the
order they run, the document's, and ``combine`` hands the step's tables (``step.PMTRecStep``) to
each stage the configuration uses. Saving, loading and moving the state loop over the same stages.

Everything is a handful of batched ops: GMB scales, weights and the alignment projection are
per-(entity, task) coefficients on the raw gradients, computed from the per-entity Gramian
(``_gram.entity_gram``, one ``bmm``), and the result is one pass ``sum_k coef[:, k] * g^k``.
No Python loop over entities and no host sync in ``combine`` (except shared mode with more than
12 tasks, which compacts its group codes with ``torch.unique``, and the moment balance's check
for rows to rescale).

The defaults are ``PMTRecParams``' (the one place they are written); the named ablation
configurations are presets (``presets.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from pmtrec_lab.mtl.base import CombineResult, Need, StepContext, WeightingMethod, register
from pmtrec_lab.mtl.params import MethodParams
from pmtrec_lab.mtl.pmtrec.combination import Combination
from pmtrec_lab.mtl.pmtrec.deviations import Deviations, EntityDeviation
from pmtrec_lab.mtl.pmtrec.focusing import Focusing, Schedule, schedule_beta
from pmtrec_lab.mtl.pmtrec.gmb import EntityReduceGMB, SideGMB
from pmtrec_lab.mtl.pmtrec.gramian import Gramian
from pmtrec_lab.mtl.pmtrec.levels import AuxLevels
from pmtrec_lab.mtl.pmtrec.magnitudes import Magnitudes
from pmtrec_lab.mtl.pmtrec.memory import EntityMemory, MainGradientMemory
from pmtrec_lab.mtl.pmtrec.meta_spsa import MetaLossSPSA
from pmtrec_lab.mtl.pmtrec.moments import MomentBalance, TaskMoments
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.signal import FrequencyExponent, FrequencyFree
from pmtrec_lab.mtl.pmtrec.step import NUM_SIDES, PMTRecStep, Stage
from pmtrec_lab.mtl.pmtrec.task_adam import TaskAdam
from pmtrec_lab.mtl.pmtrec.usefulness import MetaCosUsefulness, SPSAUsefulness
from pmtrec_lab.mtl.pmtrec.weights import Weights

__all__ = ["PMTRec"]


@register
class PMTRec(WeightingMethod):
    """PMTRec (Yang et al., arXiv 2407.21364): per-entity task weights from relative gradient
    magnitudes, Gradient Magnitude Balancing and Task Focusing.

    Parameters: ``PMTRecParams`` (defaults, bounds and meaning of each); the named
    configurations (ablations) are presets in ``presets.py``. The parameters also read as
    attributes (``method.rho``).

    ``head_weights[k]``: the mean, over the entities task k touched, of the multiplier the
    combination applies to task k's weight, ``|A_x| w_x^k`` (``w_x^k`` with
    ``normalize=True``); GMB and alignment act on representation gradients only, not heads.
    1 for a task that touched no entity this step.

    Diagnostics (detached), each from the stage that computes it: ``entity_weights`` [E, K]
    (``weights``); ``norm_ratio_before`` / ``norm_ratio_after`` [2, K] (``gmb``); ``magnitude``
    [2, K] and ``magnitude_signal`` [E, K] (``magnitudes``); ``beta``, ``conflict_fraction``,
    ``cos_main``, ``cos_main_after`` and ``focus_share`` (``focusing``); ``gmb_reduce`` [K]
    (``gmb``, reduce-only GMB); ``norm_exponent`` [2, K] (``signal``, fitted);
    ``usefulness_scale`` and ``meta_cos`` [2, K] (``usefulness``); ``delta_mean`` and
    ``delta_abs`` [2, K] (``deviations``). The [E, K] tensors are transposed views of task-major
    [K, E] tables (see ``_gram``).
    """

    name = "pmtrec"
    family: ClassVar[str] = "pmtrec"
    summary: ClassVar[str] = "PMTRec (Yang et al., arXiv 2407.21364): per-entity weights, GMB, Task Focusing"
    Params: ClassVar[type[MethodParams]] = PMTRecParams

    #: The method, stage by stage, in the order the stages run: ``docs/pmtrec-method.md``'s
    #: ("The step", "The v3 step"), except where a stage must run earlier to read or change
    #: what a later one reads (noted; each stage's docstring says why).
    STAGES: ClassVar[tuple[type[Stage], ...]] = (
        TaskAdam,  # v4 1 (b), first: it rewrites the task gradients every later stage reads
        MomentBalance,  # 3'' (d), first for the same reason (the two are alternatives)
        Gramian,  # 1: n_x^k and <g_x^k, g_x^0> from the per-entity Gramian
        FrequencyFree,  # 2': frequency-free magnitudes s_x^k
        Magnitudes,  # 2: m^{k,s} and r_x^k
        EntityMemory,  # the v3 notation: ref_x, mag_x, A'_x
        SideGMB,  # 3: GMB per (task, side)
        EntityReduceGMB,  # 3': reduce-only GMB per entity
        MetaCosUsefulness,  # 3'' (a): usefulness scales, first order
        SPSAUsefulness,  # 3'' (c): usefulness scales, SPSA on the meta loss
        Deviations,  # per-entity deviations delta_x^k (and the permuted control)
        Schedule,  # 5b, before 4: the weights' logits read beta(t)
        Weights,  # 4: w_x over A'_x
        Focusing,  # 5a and 5': alignment against g^0 and the memory
        AuxLevels,  # v4 1 (a): the auxiliary levels chosen in the run, the last factor
        Combination,  # 6: G_x and the head weights
    )

    @classmethod
    def stages_with(cls, stage: type[Stage], before: type[Stage]) -> tuple[type[Stage], ...]:
        """``STAGES`` with ``stage`` inserted before ``before``: the stages of a subclass that adds
        one (from another package, say; ``docs/contributing.md``, "Add a PMTRec stage")."""
        i = cls.STAGES.index(before)
        return (*cls.STAGES[:i], stage, *cls.STAGES[i:])

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        p = self.hparams
        assert isinstance(p, PMTRecParams)
        #: the stages this configuration runs, in ``STAGES``' order
        self.stages: tuple[Stage, ...] = tuple(cls(p, num_tasks) for cls in self.STAGES if cls.used(p))

    def __getattr__(self, name: str) -> Any:
        """The parameters read as attributes (``method.rho``): ``hparams``' fields, not copies."""
        params = self.__dict__.get("hparams")
        if params is not None and name in type(params).model_fields:
            return getattr(params, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name!r}, num_tasks={self.num_tasks}, {args})"

    def stage(self, cls: type[Stage]) -> Stage | None:
        """This configuration's stage of class ``cls`` (None if it does not run it)."""
        return next((st for st in self.stages if type(st) is cls), None)

    def beta(self, t: float) -> float:
        """beta(t) of this configuration at fractional epoch ``t`` (step 5b)."""
        p = self.hparams
        assert isinstance(p, PMTRecParams)
        return schedule_beta(t, p.schedule, p.beta_max, p.horizon)

    # The step -------------------------------------------------------------------------
    @torch.no_grad()
    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        """One step of ``docs/pmtrec-method.md``: the configuration's stages in ``STAGES``' order
        (3'' (d), 1, 2', 2, the memory, 3, 3', 3'' (a, c), delta, 5b, 4, 5a/5', 6), each reading
        the tables the earlier ones wrote into ``step`` and writing its own, diagnostics included."""
        step = PMTRecStep.start(self.name, grads, active, side, ctx)
        for stage in self.stages:
            stage.run(step)
        return CombineResult(
            combined=step.combined, head_weights=step.head_weights, diagnostics=step.diagnostics
        )

    # The meta loss --------------------------------------------------------------------
    @property
    def needs(self) -> frozenset[Need]:
        """The union of the configuration's stages' needs (its stages are fixed when it is built)."""
        return frozenset().union(*(st.needs for st in self.stages))

    @property
    def meta_value_every(self) -> int | None:
        return next((st.meta_value_every for st in self.stages if st.meta_value_every is not None), None)

    def observe_meta_loss(self, value: float, ctx: StepContext) -> None:
        for st in self.stages:
            st.observe_meta_loss(value, ctx)

    # The auxiliary levels chosen in the run (v4 1 (a), ``Need.LEVEL_SELECTION``) ----------
    def _levels(self) -> AuxLevels:
        stage = self.stage(AuxLevels)
        if not isinstance(stage, AuxLevels):
            raise AttributeError(f"method {self.name!r} chooses no auxiliary levels (level_select=False)")
        return stage

    def level_groups(self, epoch: int) -> list[list[int]]:
        """The groups of auxiliary tasks whose level a round chooses before 0-based ``epoch``, in
        order ([] when none is due)."""
        return self._levels().groups_due(epoch)

    def level_candidates(self, group: list[int]) -> list[list[float]]:
        """The level vectors [K] to branch on for ``group`` (the others at their current level)."""
        return self._levels().candidates(group)

    @property
    def levels(self) -> list[float]:
        """The current level of every task (the main task's is 1)."""
        return list(self._levels().values)

    @property
    def level_branch_epochs(self) -> int:
        return self._levels().branch_epochs

    def set_levels(self, levels: list[float]) -> None:
        self._levels().set_levels(levels)

    def end_level_round(self, record: dict[str, Any]) -> None:
        """Mark the round at ``record["epoch"]`` done and keep its record (saved with the state)."""
        self._levels().end_round(record)

    @property
    def level_rounds(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._levels().rounds]

    # State: each stage's entries, in one flat dict (the layout of every saved checkpoint) ---
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for st in self.stages:
            if type(st).keeps_state(st.p):
                state.update(st.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Each stage takes its entries; a stage this configuration keeps must find them, one it
        does not keep must not (except a state it drops as unread), and no entry may be left."""
        p = self.hparams
        assert isinstance(p, PMTRecParams)
        rest = dict(state)
        for cls in self.STAGES:
            saved = {key: rest.pop(key) for key in cls.state_keys if key in rest}
            keeps = cls.keeps_state(p)
            if saved and not keeps and cls.drops_saved(p):
                continue
            if bool(saved) != keeps:
                raise ValueError(
                    f"method {self.name!r}: saved state {'has' if saved else 'lacks'} {cls.state_name}, "
                    f"which this configuration {'does not use' if saved else 'uses'} "
                    f"({cls.describe_switches(p)})"
                )
            if keeps:
                stage = self.stage(cls)
                assert stage is not None
                stage.load_state_dict(saved)
        if rest:
            raise ValueError(f"method {self.name!r}: unknown state entries {sorted(rest)}")

    def to(self, device: torch.device | str) -> PMTRec:
        for st in self.stages:
            st.to(device)
        return self

    # Before the stages: the state objects as attributes (tests and notebooks read them) -----
    def _helper(self, cls: type[Stage], attr: str) -> Any:
        stage = self.stage(cls)
        return None if stage is None else getattr(stage, attr)

    @property
    def _exponent(self) -> FrequencyExponent | None:
        return self._helper(FrequencyFree, "exponent")

    @property
    def _memory(self) -> MainGradientMemory | None:
        return self._helper(EntityMemory, "memory")

    @_memory.setter
    def _memory(self, memory: MainGradientMemory) -> None:
        stage = self.stage(EntityMemory)
        if stage is None:
            raise AttributeError(f"method {self.name!r} keeps no per-entity memory")
        stage.memory = memory  # type: ignore[attr-defined]

    @property
    def _spsa(self) -> MetaLossSPSA | None:
        return self._helper(SPSAUsefulness, "spsa")

    @property
    def _deviation(self) -> EntityDeviation | None:
        return self._helper(Deviations, "deviation")

    @property
    def _moments(self) -> TaskMoments | None:
        return self._helper(MomentBalance, "moments")

    @property
    def lam(self) -> torch.Tensor:
        """The meta_cos usefulness scales lambda [2, K] (ones when another usefulness is set)."""
        lam = self._helper(MetaCosUsefulness, "lam")
        return torch.ones(NUM_SIDES, self.num_tasks) if lam is None else lam
