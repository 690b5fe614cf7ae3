"""No number of PMTRec moves when its code is reorganized (issue 25, "PMTRec as a package of
stages"): every registered PMTRec-family configuration and every v3 switch, at the level of one
``combine`` (outputs, every diagnostic and the state, ten steps) and of a short training on the
synthetic dataset (model, method state, history, metrics, diagnostics tables), against digests
recorded with the code before the stage package (``tests/pmtrec_identity.py``)."""

from __future__ import annotations

import json

import pytest

from tests.pmtrec_identity import (
    REFERENCE,
    combine_digests,
    configurations,
    training_digests,
)

REF = json.loads(REFERENCE.read_text())


def test_the_references_cover_every_registered_configuration():
    assert set(configurations()) <= set(REF["combine"]) and set(configurations()) <= set(REF["train"])


def test_every_configuration_combines_bit_for_bit_as_before():
    now = combine_digests()
    moved = sorted(label for label in REF["combine"] if now.get(label) != REF["combine"][label])
    assert not moved, f"combine outputs, diagnostics or state moved for {moved}"


@pytest.mark.slow
def test_every_configuration_trains_bit_for_bit_as_before():
    now = training_digests()
    moved = {
        label: [part for part, value in ref.items() if now[label][part] != value]
        for label, ref in REF["train"].items()
    }
    moved = {label: parts for label, parts in moved.items() if parts}
    assert not moved, f"what moved, per configuration: {moved}"
