"""The auxiliary holdout (``data.aux_holdout``): held-out links and labels to score auxiliary tasks.

Multi-task papers judge a method by every task's metric, so a share of each auxiliary relation
and label set is held out once per dataset, never trained on, and scored by the task's own head
(``pmtrec_lab.eval.auxiliary``). What is held out:

- a relation (social links, item-item links): a share of its *undirected* pairs, with every row
  of a held-out pair (both directions where both are stored), so a model never trains on the
  reverse of an edge it is scored on;
- a label set: a share of its entities, with all their label rows.

The held-out units are split half validation, half test (validation gets the odd one). The draw
uses a stream of its own per relation or label set, ``default_rng([split_seed, AUX_STREAM,
crc32(name)])``, beside the split's and the meta split's (``split.META_STREAM``), so the main
task's split is unchanged and each set's draw does not depend on the others. The held-out rows
are removed from ``RecDataset.relations`` / ``labels`` themselves, so no task and no graph an
encoder builds sees them; they are kept in ``RecDataset.extra["aux_holdout"]`` (which the cache
stores like any other value, and which exists only when the setting is on).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pmtrec_lab.data.types import LabelSet, RecDataset, Relation

#: the auxiliary holdout's stream: ``default_rng([split_seed, AUX_STREAM, crc32(name)])``
AUX_STREAM = 2
#: where a dataset keeps its held-out rows (``{"valid": {name: set}, "test": {name: set}}``)
EXTRA_KEY = "aux_holdout"

Heldout = Relation | LabelSet


@dataclass(frozen=True)
class AuxHoldout:
    """The held-out rows of each auxiliary relation and label set, by name, per split."""

    valid: dict[str, Heldout]
    test: dict[str, Heldout]

    def to_extra(self) -> dict[str, Any]:
        """The form kept in ``RecDataset.extra`` (plain dicts of the data classes the cache stores)."""
        return {"valid": dict(self.valid), "test": dict(self.test)}

    def sizes(self) -> dict[str, dict[str, int]]:
        """Held-out rows per set and split (``datasets info``)."""
        return {name: {"valid": len(self.valid[name]), "test": len(self.test[name])} for name in self.valid}


def check_fraction(fraction: float | None) -> float:
    """``fraction`` as a float in [0, 1) (None: 0); a ``ValueError`` naming the setting otherwise."""
    value = 0.0 if fraction is None else float(fraction)
    if not (np.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(
            f"data.aux_holdout must be a share in [0, 1) of each auxiliary relation or label set "
            f"to hold out (0 or null: off), got {fraction}"
        )
    return value


def _rng(split_seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(split_seed), AUX_STREAM, zlib.crc32(name.encode())])


def _roles(num_units: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Per unit: 0 training, 1 validation, 2 test; ``round(fraction * n)`` units held out at random."""
    n_hold = int(round(fraction * num_units))
    n_valid = (n_hold + 1) // 2
    order = rng.permutation(num_units)
    roles = np.zeros(num_units, dtype=np.int8)
    roles[order[:n_valid]] = 1
    roles[order[n_valid:n_hold]] = 2
    return roles


def split_relation(rel: Relation, fraction: float, split_seed: int) -> tuple[Relation, Relation, Relation]:
    """(training, validation, test) rows of ``rel``, holding out whole undirected pairs."""
    lo, hi = np.minimum(rel.src, rel.dst), np.maximum(rel.src, rel.dst)
    width = int(hi.max()) + 1 if len(rel) else 1
    pairs, row_pair = np.unique(lo * width + hi, return_inverse=True)
    role = _roles(len(pairs), fraction, _rng(split_seed, rel.name))[row_pair.reshape(-1)]
    parts = [replace(rel, src=rel.src[role == r], dst=rel.dst[role == r]) for r in (0, 1, 2)]
    return parts[0], parts[1], parts[2]


def split_labels(lab: LabelSet, fraction: float, split_seed: int) -> tuple[LabelSet, LabelSet, LabelSet]:
    """(training, validation, test) rows of ``lab``, holding out whole entities."""
    entities, row_entity = np.unique(lab.entity, return_inverse=True)
    role = _roles(len(entities), fraction, _rng(split_seed, lab.name))[row_entity.reshape(-1)]
    parts = [replace(lab, entity=lab.entity[role == r], label=lab.label[role == r]) for r in (0, 1, 2)]
    return parts[0], parts[1], parts[2]


def hold_out_aux(
    relations: dict[str, Relation], labels: dict[str, LabelSet], fraction: float, split_seed: int
) -> tuple[dict[str, Relation], dict[str, LabelSet], AuxHoldout]:
    """The training relations and label sets, and the held-out rows of each (``fraction`` > 0)."""
    fraction = check_fraction(fraction)
    valid: dict[str, Heldout] = {}
    test: dict[str, Heldout] = {}
    train_rel: dict[str, Relation] = {}
    train_lab: dict[str, LabelSet] = {}
    for name, rel in relations.items():
        train_rel[name], valid[name], test[name] = split_relation(rel, fraction, split_seed)
    for name, lab in labels.items():
        train_lab[name], valid[name], test[name] = split_labels(lab, fraction, split_seed)
    return train_rel, train_lab, AuxHoldout(valid=valid, test=test)


def aux_holdout_of(ds: RecDataset) -> AuxHoldout | None:
    """The dataset's auxiliary holdout, or None when it was loaded without ``data.aux_holdout``."""
    held = ds.extra.get(EXTRA_KEY)
    if not isinstance(held, dict):
        return None
    return AuxHoldout(valid=dict(held["valid"]), test=dict(held["test"]))
