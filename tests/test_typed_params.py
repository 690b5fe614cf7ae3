"""The typed method parameters travel (issue 25, item 2): a ``RunConfig`` carries the resolved
``MethodParams`` of its method, resolved once when it loads, and every consumer (the trainer, the
run cache, ``config.yaml``, the report headlines, the explorer) reads them from it; the grid's
default learning rates and patience come from the configuration's owners."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pmtrec_lab import mtl
from pmtrec_lab.config import DEFAULT_LR, SHORT_RUN_LR, EvalConfig, OptimConfig, load_config
from pmtrec_lab.mtl import MethodParams, resolve_params

PACKAGE = Path(__file__).resolve().parents[1] / "pmtrec_lab"

#: modules that may still resolve raw parameters: the registry itself, configuration loading
#: (once per load), and parameters that belong to no run configuration (a grid's variant labels
#: and its run names, a search space's samples, a checkpoint's recorded configuration, the
#: explorer's defaults, the report helpers that take a method name and given parameters)
RESOLVERS = {
    "mtl/registry.py",
    "mtl/__init__.py",
    "mtl/base.py",
    "config.py",
    "compare/spec.py",
    "compare/tables.py",
    "tune/space.py",
    "train/run.py",
    "widgets/ablation.py",
    "reports/headlines.py",
}


def test_a_run_configuration_carries_its_resolved_parameters():
    cfg = load_config(overrides=["method.name=pmtrec-gmb", "method.params.tau=0.5"])
    assert isinstance(cfg.method.resolved, MethodParams)
    assert cfg.method.resolved_dict() == resolve_params("pmtrec-gmb", {"tau": 0.5})
    assert cfg.method.params == {"tau": 0.5}  # the given ones, as before
    assert cfg.method.resolved.rho == 0.5  # the preset's override
    assert cfg.model_copy(deep=True).method.resolved == cfg.method.resolved
    cfg.method.params = {}  # an assignment resolves again
    assert cfg.method.resolved_dict() == resolve_params("pmtrec-gmb")


def test_consumers_do_not_resolve_again(monkeypatch: pytest.MonkeyPatch):
    """After the configuration loaded, its run folder's record, its cache key and its method are
    built from ``cfg.method.resolved``: a resolution call would fail here."""
    from pmtrec_lab.train.cache import config_key
    from pmtrec_lab.train.trainer import resolved_config, run_identity

    cfg = load_config(overrides=["method.name=pmtrec", "method.params.rho=0.25"])
    expected = resolve_params("pmtrec", {"rho": 0.25})

    def refuse(*args, **kwargs):
        raise AssertionError("resolved again")

    for name in ("validate_params", "typed_params", "upgrade_params", "resolve_params"):
        monkeypatch.setattr(mtl.registry, name, refuse)
    assert resolved_config(cfg).method.params == expected
    assert run_identity(cfg)["method"]["params"] == expected
    assert re.fullmatch(r"[0-9a-f]{12}", config_key(cfg))
    method = mtl.build_method(cfg.method.name, 3, cfg.method.resolved)
    assert method.hparams == cfg.method.resolved and method.name == "pmtrec"


def test_build_method_refuses_another_methods_parameters():
    with pytest.raises(TypeError, match="takes"):
        mtl.build_method("pmtrec", 3, load_config().method.resolved)  # EW's parameters


def test_only_the_listed_modules_resolve_raw_parameters():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        if rel not in RESOLVERS and re.search(r"\b(resolve_params|validate_params|make_method)\(", text):
            offenders.append(rel)
        if rel != "mtl/registry.py" and ".upgrade(" in text:
            offenders.append(f"{rel} (upgrade)")
    assert not offenders, offenders
    assert "mtl.pmtrec" not in (PACKAGE / "compare" / "tables.py").read_text()


def test_the_grid_takes_its_defaults_from_the_configuration():
    from pmtrec_lab.compare import GridSpec

    spec = GridSpec()
    assert spec.lrs == [DEFAULT_LR, SHORT_RUN_LR]
    assert spec.base["eval"]["patience"] == EvalConfig().patience
    assert spec.base["optim"]["epochs"] == OptimConfig().epochs


def test_a_copy_without_validation_reads_its_own_parameters():
    """``model_copy(update=...)`` skips validation; the copy's ``resolved`` follows its own
    ``params`` (and name), not the original's (a test trains such a copy with ``params: {}``)."""
    cfg = load_config(overrides=["method.name=pmtrec", "method.params.rho=0.25"])
    plain = cfg.method.model_copy(update={"params": {}})
    assert plain.resolved_dict() == resolve_params("pmtrec") and cfg.method.resolved.rho == 0.25
    other = cfg.method.model_copy(update={"name": "pmtrec-gmb", "params": {"tau": 0.5}})
    assert other.resolved_dict() == resolve_params("pmtrec-gmb", {"tau": 0.5})
    cfg.method.params["rho"] = 0.5  # changed in place
    assert cfg.method.resolved.rho == 0.5
