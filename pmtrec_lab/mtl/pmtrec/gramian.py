"""Step 1's per-entity statistics (``docs/pmtrec-method.md``, "The step", 1): the Gramian.

The trainer hands PMTRec every task's gradient g_x^k for every touched row (step 1). Every
per-entity quantity the later steps need, n_x^k = ||g_x^k|| and the inner products with the main
task's gradient <g_x^k, g_x^0>, follows from the per-entity K x K Gramian, one batched product
(``_gram.entity_gram``); the only other pass over the [K, E, D] block is step 6's combination.
"""

from __future__ import annotations

from pmtrec_lab.mtl._gram import entity_gram, task_major_stats
from pmtrec_lab.mtl.pmtrec.step import MAIN_TASK, PMTRecStep, Stage

__all__ = ["Gramian"]


class Gramian(Stage):
    """n_x^k and <g_x^k, g_x^0> (task-major [K, E]) from the step's only Gramian; the magnitude
    signal starts as n_x^k (v2's), which step 2' may replace."""

    step = "1"

    def run(self, s: PMTRecStep) -> None:
        gram = entity_gram(s.grads)  # [E, K, K], the only Gramian of the step
        s.norms, s.inner = task_major_stats(gram, MAIN_TASK)
        s.signal = s.norms
