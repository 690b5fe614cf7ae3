"""Typed parameters of the baselines: every bad value is refused with a message naming the field,
and the defaults a method runs with are its parameter class's."""

from __future__ import annotations

import inspect

import pytest
import torch

from pmtrec_lab.mtl import (
    AGGREGATORS,
    MethodParamsError,
    get_entry,
    make_method,
    method_names,
    validate_params,
)
from pmtrec_lab.mtl.params import NoParams

BASELINES = method_names("baseline")
WITH_PARAMS = tuple(n for n in BASELINES if get_entry(n).params_class.model_fields)

# (method, field, value): values out of bounds ...
OUT_OF_BOUNDS = [
    ("uw", "lr", 0.0),
    ("uw", "lr", -1e-3),
    ("uw", "init_log_var", float("nan")),
    ("uw", "init_log_var", float("inf")),
    ("dwa", "temperature", 0.0),
    ("dwa", "temperature", -1.0),
    ("gradnorm", "alpha", -0.5),
    ("gradnorm", "lr", 0.0),
    ("gradnorm", "min_weight", 0.0),
    ("famo", "gamma", -1e-3),
    ("famo", "w_lr", 0.0),
    ("famo", "w_lr", float("nan")),
    ("famo", "min_losses", [0.0, 1.0]),  # 2 values for 3 tasks
    ("famo", "min_losses", [0.0, float("inf"), 0.0]),
    ("metabalance", "relax", 1.5),
    ("metabalance", "relax", -0.1),
    ("metabalance", "beta", 1.0),
    ("metabalance", "beta", -0.1),
    ("metabalance", "strategy", "both"),
    ("mgda", "normalization", "l3"),
    ("mgda", "tol", 0.0),
    ("mgda", "max_iter", 0),
    ("mgda", "solver", "cvx"),
    ("cagrad", "c", -0.1),
    ("cagrad", "rescale", 3),
    ("aligned-mtl", "scale_mode", "max"),
    ("nash-mtl", "update_weights_every", 0),
    ("nash-mtl", "max_norm", -1.0),
    ("nash-mtl", "tol", 0.0),
    ("nash-mtl", "max_iter", 0),
    ("db-mtl", "beta", 1.0),
    ("db-mtl", "beta_sigma", -1.0),
    ("db-mtl", "eps", 0.0),
    ("db-mtl", "ema", "both"),
    ("static-lambda", "weight", -0.1),
    ("static-lambda", "weight", float("inf")),
    ("static-lambda", "task_weights", {"social:trust": -1.0}),
    ("static-lambda", "task_weights", {"social:trust": float("nan")}),
    ("static-lambda", "task_weights", {"": 0.5}),
    ("gcs", "head_weights", "mean"),
]

# ... and values of the wrong type (strict: a bool is not a number, a string not a float, 2.7 not an int)
WRONG_TYPE = [
    ("uw", "lr", True),
    ("uw", "init_log_var", "0"),
    ("dwa", "temperature", "2"),
    ("gradnorm", "alpha", True),
    ("gradnorm", "lr", "0.002"),
    ("famo", "gamma", False),
    ("famo", "min_losses", "0"),
    ("famo", "min_losses", [True, 0.0, 0.0]),
    ("metabalance", "relax", "0.7"),
    ("metabalance", "strategy", 1),
    ("mgda", "tol", True),
    ("mgda", "max_iter", 2.7),
    ("mgda", "max_iter", 250.0),
    ("mgda", "normalization", None),
    ("cagrad", "c", True),
    ("cagrad", "rescale", "1"),
    ("aligned-mtl", "scale_mode", 1),
    ("nash-mtl", "update_weights_every", 2.7),
    ("nash-mtl", "max_iter", True),
    ("nash-mtl", "max_norm", "1"),
    ("db-mtl", "beta", True),
    ("db-mtl", "eps", "1e-8"),
    ("db-mtl", "ema", ["norm"]),
    ("static-lambda", "weight", True),
    ("static-lambda", "weight", "0.1"),
    ("static-lambda", "task_weights", [0.1]),
    ("static-lambda", "task_weights", {"social:trust": "0.1"}),
    ("gcs", "head_weights", 1),
]


def _expect_named(name: str, field: str, value: object) -> None:
    with pytest.raises(MethodParamsError, match=rf"method\.params\.{field}\b") as info:
        make_method(name, 3, **{field: value})
    assert isinstance(info.value, ValueError)
    assert info.value.method == name
    assert any(f.split(".")[0] == field for f in info.value.fields)


@pytest.mark.parametrize(("name", "field", "value"), OUT_OF_BOUNDS)
def test_out_of_bound_value_is_refused_naming_the_field(name, field, value):
    _expect_named(name, field, value)


@pytest.mark.parametrize(("name", "field", "value"), WRONG_TYPE)
def test_wrong_type_is_refused_naming_the_field(name, field, value):
    _expect_named(name, field, value)


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_every_baseline_with_parameters_is_covered(name):
    assert any(n == name for n, _, _ in OUT_OF_BOUNDS), f"{name}: no out-of-bound case"
    assert any(n == name for n, _, _ in WRONG_TYPE), f"{name}: no wrong-type case"


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_config_path_and_constructor_refuse_the_same(name):
    """``validate_params`` (configuration loading) and the class built with keywords refuse the
    same value as ``make_method``."""
    _, field, value = next(c for c in OUT_OF_BOUNDS if c[0] == name)
    with pytest.raises(MethodParamsError, match=rf"method\.params\.{field}\b"):
        validate_params(name, {field: value})
    with pytest.raises(MethodParamsError, match=rf"method\.params\.{field}\b"):
        get_entry(name).cls(3, **{field: value})


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_parameter_is_refused(name):
    with pytest.raises(MethodParamsError, match=r"method\.params\.not_a_param: unknown parameter"):
        make_method(name, 3, not_a_param=1)


@pytest.mark.parametrize("name", BASELINES)
def test_defaults_are_the_params_class_defaults(name):
    cls = get_entry(name).params_class
    method = make_method(name, 3)
    assert method.params == cls().as_dict()
    assert method.hparams == cls()
    assert get_entry(name).cls(3).params == cls().as_dict()  # built directly, without the registry


@pytest.mark.parametrize("name", BASELINES)
def test_every_field_is_described(name):
    docs = get_entry(name).params_class.field_docs()
    assert all(docs.values()), {k: v for k, v in docs.items() if not v}


def test_parameterless_baselines():
    for name in ("single-task", "ew", "pcgrad", "imtl-g"):
        assert get_entry(name).params_class is NoParams
        assert make_method(name, 3).params == {}


@pytest.mark.parametrize("name", sorted(set(BASELINES) & set(AGGREGATORS)))
def test_aggregator_keyword_defaults_match_the_params_class(name):
    """The standalone aggregators repeat the defaults in their signatures: they must agree."""
    defaults = get_entry(name).params_class().as_dict()
    sig = inspect.signature(AGGREGATORS[name])
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in defaults:
            assert p.default == defaults[p.name], (name, p.name)


def test_int_given_for_a_float_is_read_as_a_float():
    m = make_method("dwa", 3, temperature=2)
    assert m.params == {"temperature": 2.0} and isinstance(m.hparams.temperature, float)


def test_famo_min_losses_one_per_task():
    m = make_method("famo", 3, min_losses=(0.1, 0.0, 0.2))  # a tuple is read as a list
    assert m.params["min_losses"] == [0.1, 0.0, 0.2]
    torch.testing.assert_close(m.min_losses, torch.tensor([0.1, 0.0, 0.2]))
    torch.testing.assert_close(make_method("famo", 2, min_losses=0.5).min_losses, torch.full((2,), 0.5))
