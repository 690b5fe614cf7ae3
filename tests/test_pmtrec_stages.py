"""PMTRec as a package of stages (issue 25): each stage reads only the parameters it declares,
the stages run in the document's order (two exceptions, each for a data dependency), the state
is each stage's and loads only where the configuration keeps it, no function is long, and the
step has no host synchronization beyond the ones it always had. The numbers themselves are pinned
by ``tests/test_pmtrec_stages_identity.py`` and the loop references of ``tests/test_pmtrec.py``."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import torch

from pmtrec_lab.mtl import make_method
from pmtrec_lab.mtl.pmtrec import PMTRec, PMTRecParams, Stage
from tests.pmtrec_identity import configurations, run_steps

PACKAGE = Path(inspect.getfile(PMTRec)).parent


def _params_read(cls: type[Stage]) -> set[str]:
    """Attributes read off ``self.p`` or ``p`` in the stage class's own code."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            v = node.value
            if (isinstance(v, ast.Name) and v.id == "p") or (
                isinstance(v, ast.Attribute) and v.attr == "p" and isinstance(v.value, ast.Name)
            ):
                out.add(node.attr)
    return out


@pytest.mark.parametrize("cls", PMTRec.STAGES, ids=lambda c: c.__name__)
def test_a_stage_reads_only_the_parameters_it_declares(cls):
    fields = set(PMTRecParams.model_fields)
    assert set(cls.reads) <= fields and set(cls.switches) <= set(cls.reads)
    undeclared = _params_read(cls) - set(cls.reads)
    assert not undeclared, f"{cls.__name__} reads parameters it does not declare: {undeclared}"
    assert cls.step, f"{cls.__name__} names no step of docs/pmtrec-method.md"
    assert not cls.state_keys or cls.state_name


def test_every_parameter_is_read_by_a_stage_and_the_stages_run_in_the_document_s_order():
    read = set().union(*(cls.reads for cls in PMTRec.STAGES))
    assert read == set(PMTRecParams.model_fields)
    steps = [cls.step for cls in PMTRec.STAGES]
    # the document's order, but v4's 1 (b) and 3'' (d) first (they rewrite the gradients) and 5b
    # before 4; v4's auxiliary levels are the combination's last factor
    assert steps == [
        "v4 1 (b)", "3'' (d)", "1", "2'", "2", "v3 notation", "3", "3'", "3'' (a)", "3'' (c)", "delta",
        "5b", "4", "5a, 5'", "v4 1 (a)", "6",
    ]  # fmt: skip
    keys = [key for cls in PMTRec.STAGES for key in cls.state_keys]
    assert len(keys) == len(set(keys))  # one owner per state entry


def test_the_default_runs_only_its_stages():
    names = [type(st).__name__ for st in make_method("pmtrec", 3).stages]
    assert names == [
        "Gramian", "Magnitudes", "EntityMemory", "SideGMB", "EntityReduceGMB", "Schedule", "Weights",
        "Focusing", "Combination",
    ]  # fmt: skip
    v2 = [type(st).__name__ for st in make_method("pmtrec-v2", 3).stages]
    assert "EntityMemory" not in v2 and "EntityReduceGMB" not in v2


def test_no_function_of_the_package_is_longer_than_80_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long
    combine = inspect.getsource(PMTRec.combine)
    assert len(combine.splitlines()) < 40


#: every call in the package that can wait for a device, and why it is there (all of them were
#: in the step before the stages; a new one needs a reason here)
HOST_SYNCS = {
    ("weights.py", 'torch.unique('): "shared weights with more than 12 tasks compact their group codes",
    ("weights.py", 'int(gid.max())'): "the same",
    ("moments.py", '.nonzero('): "the moment balance gathers the (row, task) pairs a task touched",
    ("moments.py", 'bool(aux.any())'): "and skips the rescaling when no auxiliary pair has a main moment",
    ("meta_spsa.py", 'device="cpu"'): "SPSA keeps its touched-pairs mask on the CPU",
    ("meta_spsa.py", '.tolist('): "loading a saved state (not in the step)",
    ("task_adam.py", '.nonzero('): "per-task Adam gathers the (row, task) pairs a task touched",
}
SYNC = re.compile(r"\.item\(|\.tolist\(|\.nonzero\(|torch\.unique\(|device=\"cpu\"|\.cpu\(|\.numpy\(|"
                  r"\b(?:int|bool|float)\([\w.\[\]]*\.(?:any|all|max|min|sum)\(\)\)")  # fmt: skip


def test_the_step_gains_no_host_synchronization():
    found = set()
    for path in PACKAGE.glob("*.py"):
        for line in path.read_text().splitlines():
            code = line.split("#")[0]
            for match in SYNC.finditer(code):
                found.add((path.name, match.group(0)))
    assert found == set(HOST_SYNCS), found ^ set(HOST_SYNCS)


@pytest.mark.parametrize("label", ["pmtrec", "extra/everything", "extra/meta-cos-delta-focus"])
def test_state_entries_belong_to_their_stages(label):
    name, params = configurations()[label]
    method = make_method(name, 3, **params)
    run_steps(method, range(3))
    state = method.state_dict()
    kept = {key for st in method.stages if type(st).keeps_state(method.hparams) for key in st.state_keys}
    assert set(state) == kept
    with pytest.raises(ValueError, match="unknown state entries"):
        make_method(name, 3, **params).load_state_dict({**state, "bogus": torch.zeros(1)})
    for key in set(state) - {"magnitude", "initialized"}:
        with pytest.raises(ValueError, match="lacks"):
            make_method(name, 3, **params).load_state_dict({k: v for k, v in state.items() if k != key})
    plain = make_method("pmtrec-v2", 3)
    for key in set(state) - {"magnitude", "initialized"}:
        with pytest.raises(ValueError, match="which this configuration does not use"):
            plain.load_state_dict({"magnitude": state["magnitude"], "initialized": state["initialized"],
                                   key: state[key]})  # fmt: skip


def test_the_parameters_read_as_attributes_and_the_state_objects_as_before():
    m = make_method("pmtrec-moments", 3, delta="learned", usefulness="meta_spsa")
    assert m.rho == 1.0 and m.weight_mode == "personalized" and m.spsa_every == 25
    assert m._moments is not None and m._deviation is not None and m._spsa is not None
    assert m._exponent is None and make_method("pmtrec", 3, norm_mode="fitted")._exponent is not None
    assert torch.equal(m.lam, torch.ones(2, 3))
    with pytest.raises(AttributeError):
        m.no_such_parameter  # noqa: B018
