"""PMTRec (Yang et al., arXiv 2407.21364) as a package of stages, one per step of
``docs/pmtrec-method.md`` ("The step", "The v3 step"), in the order they run (``PMTRec.STAGES``):

| module | stage | step |
| --- | --- | --- |
| ``moments`` | ``MomentBalance`` | 3'' (d) per-task second moments (runs first: it rewrites the gradients) |
| ``gramian`` | ``Gramian`` | 1: n_x^k and <g_x^k, g_x^0> from the per-entity Gramian |
| ``signal`` | ``FrequencyFree`` | 2': frequency-free magnitudes s_x^k |
| ``magnitudes`` | ``Magnitudes`` | 2: m^{k,s} and r_x^k |
| ``memory`` | ``EntityMemory`` | the v3 notation: ref_x, mag_x, A'_x |
| ``gmb`` | ``SideGMB``, ``EntityReduceGMB`` | 3 and 3': Gradient Magnitude Balancing |
| ``usefulness`` | ``MetaCosUsefulness``, ``SPSAUsefulness`` | 3'' (a) and (c): usefulness scales |
| ``deviations`` | ``Deviations`` | per-entity deviations delta_x^k |
| ``focusing`` | ``Schedule``, ``Focusing`` | 5b (runs before 4, which reads it), 5a and 5' |
| ``weights`` | ``Weights`` | 4: w_x |
| ``combination`` | ``Combination`` | 6: G_x and the head weights |

``params`` holds ``PMTRecParams`` (flat: run names hash it), ``step`` the step's tables
(``PMTRecStep``) and the stage interface (``Stage``), ``method`` the registered method and
``meta_spsa`` the SPSA estimator of 3'' (c). How to add a stage: ``docs/contributing.md``.
"""

from __future__ import annotations

from pmtrec_lab.mtl.pmtrec.focusing import SCHEDULES, schedule_beta
from pmtrec_lab.mtl.pmtrec.gmb import GMB_TARGETS
from pmtrec_lab.mtl.pmtrec.method import PMTRec
from pmtrec_lab.mtl.pmtrec.params import PMTRecParams
from pmtrec_lab.mtl.pmtrec.step import NUM_SIDES, PMTRecStep, Stage
from pmtrec_lab.mtl.pmtrec.weights import WEIGHT_MODES

__all__ = [
    "GMB_TARGETS",
    "NUM_SIDES",
    "SCHEDULES",
    "WEIGHT_MODES",
    "PMTRec",
    "PMTRecParams",
    "PMTRecStep",
    "Stage",
    "schedule_beta",
]
