"""The benefit map's runs, as a comparison grid (issue "PMTRec v4", part 1).

For a dataset with auxiliary tasks ``k = 1..K`` the map needs, under the v3 grid's protocol (MF dim
64, the meta split, at most 100 epochs, patience 5) at the learning rate EW chose for the dataset
in ``results/grid-v3``: EW with every task, EW with task ``k`` left out (one variant per task,
``leave_out``), and single-task, each at 3 seeds. Every run writes per-user and per-item
validation metrics of its selected epoch (``per_user_valid.parquet``, ``per_item_valid.parquet``),
which :mod:`pmtrec_lab.benefit.measure` gathers into one committed table.
"""

from __future__ import annotations

from typing import Any

from pmtrec_lab.data.registry import get_spec

__all__ = ["BASE", "EW_LR", "WEIGHTINGS", "benefit_grid", "variant_label", "weights_grid"]

#: the v3 grid's run settings (``results/grid-v3.yaml``'s ``base``, the settings switched on by
#: default after it pinned off: no auxiliary holdout, autograd task gradients)
BASE: dict[str, Any] = {
    "data": {"meta_split": True, "aux_holdout": 0},
    "encoder": {"name": "mf", "dim": 64},
    "optim": {"epochs": 100, "task_gradients": "autograd"},
    "eval": {"patience": 5},
    "progress": "log",
}

#: the methods that learn per-entity task weights, scored against the map: PMTRec v3 (the
#: default), v2, GCS and v3 with learned per-entity deviations
WEIGHTINGS = ("pmtrec", "pmtrec-v2", "gcs", "pmtrec-delta")

#: the learning rate EW chose on seed 0's validation in ``results/grid-v3`` (``lr_choice.csv``)
EW_LR = {"lastfm": 1e-3, "ciao": 1e-3, "amazon": 3e-3, "ml-100k": 3e-3}


def variant_label(task: str) -> str:
    """The grid label of EW without ``task`` (``social:trust`` -> ``ew-no-social-trust``)."""
    return "ew-no-" + task.replace(":", "-").replace("_", "-")


def benefit_grid(dataset: str, lr: float | None = None, seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    """The grid (a ``GridSpec`` mapping) of one dataset's benefit map: ``ew``, ``single-task`` and
    EW without each enabled default auxiliary task, at ``lr`` (default: EW's grid-v3 choice)."""
    if lr is None:
        if dataset not in EW_LR:
            raise ValueError(
                f"dataset {dataset!r}: no grid-v3 EW learning rate known; pass lr (known: {', '.join(EW_LR)})"
            )
        lr = EW_LR[dataset]
    tasks = [t.name for t in get_spec(dataset).tasks if t.enabled]
    variants = {variant_label(t): {"name": "ew", "leave_out": [t]} for t in tasks}
    return {
        "datasets": [dataset],
        "methods": ["ew", "single-task", *variants],
        "seeds": list(seeds),
        "lrs": [float(lr)],
        "pmtrec": "ew",
        "base": BASE,
        "variants": variants,
    }


def weights_grid(dataset: str, lr: float | None = None, seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """The grid of the weightings scored against a dataset's map (``WEIGHTINGS``), at the map's
    learning rate, seed 0: scored against the benefit of the map's other seeds (1 and 2), which
    did not train them. Their per-entity weights are the runs' ``diagnostics/entity_weights.parquet``."""
    grid = benefit_grid(dataset, lr)
    return {**grid, "methods": list(WEIGHTINGS), "seeds": list(seeds), "pmtrec": "pmtrec", "variants": {}}
