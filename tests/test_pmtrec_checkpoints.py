"""Method states that PMTRec saved before the stage package (issue 25) still load, and the method
continues from them exactly as the code that saved them did: one state per registered
configuration and v3 switch, from a short training on the synthetic dataset
(``tests/pmtrec_identity.py``, ``write_old_states``)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.pmtrec_identity import OLD_STATES, REFERENCE, configurations, continuation_digest

SAVED = torch.load(OLD_STATES, weights_only=True)
EXPECTED = json.loads(REFERENCE.read_text())["continuation"]


@pytest.mark.parametrize("label", sorted(SAVED))
def test_a_state_saved_before_the_stages_loads_and_continues_bit_for_bit(label):
    name, params = configurations()[label]
    saved = SAVED[label]
    shape = {**saved["shape"], "num_entities": tuple(saved["shape"]["num_entities"])}
    shape["touched"] = tuple(shape["touched"])
    assert continuation_digest(name, params, saved["state"], shape) == EXPECTED[label]
