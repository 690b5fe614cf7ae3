"""Search spaces of ``pmtrec-lab tune``: one YAML file per method, ``<dir>/<method>.yaml`` (or
``<dir>/<dataset>/<method>.yaml``, which wins on that dataset, e.g. for per-task weights whose
task names depend on the dataset).

Each key is ``optim.lr``, ``optim.weight_decay``, or a typed parameter of the method (a field of
its ``MethodParams`` class, ``pmtrec_lab.mtl``), where a mapping-valued parameter takes its
entries as ``<parameter>.<key>`` (static-lambda's per-task weights: ``task_weights.social:trust``).
Each value is a distribution, one of::

    optim.lr: {loguniform: [1.0e-4, 1.0e-2]}   # log-uniform on [low, high], low > 0
    alpha: {uniform: [0.5, 3.0]}                # uniform on [low, high]
    update_weights_every: {int: [1, 10]}        # whole numbers low..high, both included
    normalization: {choice: [none, l2]}         # one of the listed values
    rescale: 1                                  # a fixed value

The file is checked when it loads, before Ray starts: an unknown key (not a typed parameter of
the method), a malformed distribution, or bounds the method refuses (each end, and each choice,
is validated by the method's parameter class) is one ``ConfigError`` line naming the file and
the key. Ray is imported only by ``ray_space`` (the Ray Tune domains).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmtrec_lab.errors import ConfigError
from pmtrec_lab.mtl import get_entry, validate_params
from pmtrec_lab.yaml_files import read_yaml_file

__all__ = ["OPTIM_KEYS", "Dimension", "SearchSpace", "find_space_file", "load_space", "split_sample"]

#: the optimizer settings a search space may sample besides the method's parameters
OPTIM_KEYS = ("optim.lr", "optim.weight_decay")
#: the distribution kinds of a search-space entry
KINDS = ("uniform", "loguniform", "int", "choice")


@dataclass(frozen=True)
class Dimension:
    """One sampled setting: ``kind`` (``uniform``, ``loguniform``, ``int``, ``choice`` or
    ``fixed``) and its ``values`` (``(low, high)``, the choices, or the one fixed value)."""

    key: str
    kind: str
    values: tuple[Any, ...]

    def examples(self) -> tuple[Any, ...]:
        """The values the file is checked with: both ends, every choice, or the fixed value."""
        return self.values


@dataclass(frozen=True)
class SearchSpace:
    """A method's search space (``dimensions`` in file order) and the file it came from."""

    method: str
    path: Path
    dimensions: tuple[Dimension, ...]

    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]


def find_space_file(spaces: Path, dataset: str, method: str) -> Path:
    """``<spaces>/<dataset>/<method>.yaml`` if present, else ``<spaces>/<method>.yaml``; a
    ``ConfigError`` naming both when neither exists."""
    specific, generic = spaces / dataset / f"{method}.yaml", spaces / f"{method}.yaml"
    for path in (specific, generic):
        if path.is_file():
            return path
    raise ConfigError(
        f"tune --spaces {spaces}: no search space for method {method!r} ({generic} or {specific}); "
        "write one (keys: optim.lr, optim.weight_decay and the method's parameters)"
    )


def _parameter_fields(method: str) -> dict[str, Any]:
    """The method's typed parameters: field name -> annotation."""
    cls = get_entry(method).params_class
    return {name: f.annotation for name, f in cls.model_fields.items()}


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (dict, Mapping) or annotation is dict


def _dimension(where: str, key: str, value: Any) -> Dimension:
    """A file entry as a ``Dimension``; malformed distributions are refused naming the key."""
    if not isinstance(value, Mapping):
        if isinstance(value, list):
            raise ConfigError(f"{where}: {key}: a bare list; write {{choice: [...]}} to sample among values")
        return Dimension(key, "fixed", (value,))
    if len(value) != 1 or next(iter(value)) not in KINDS:
        raise ConfigError(
            f"{where}: {key}: expected one of {{{': ..., '.join(KINDS)}: ...}} or a fixed value, "
            f"got {dict(value)!r}"
        )
    kind, args = next(iter(value.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {key}: choice needs a non-empty list of values, got {args!r}")
        return Dimension(key, kind, tuple(args))
    numbers = isinstance(args, list) and len(args) == 2
    numbers = numbers and all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
    if not numbers or not all(math.isfinite(a) for a in args):
        raise ConfigError(f"{where}: {key}: {kind} needs [low, high], two finite numbers; got {args!r}")
    low, high = args
    if not low < high:
        raise ConfigError(f"{where}: {key}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: {key}: int needs whole-number bounds, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: {key}: loguniform needs low > 0, got {low}")
    if kind == "int":
        return Dimension(key, kind, (int(low), int(high)))
    return Dimension(key, kind, (float(low), float(high)))


def _check_key(where: str, method: str, key: str, fields: dict[str, Any]) -> None:
    head, _, sub = key.partition(".")
    if key in OPTIM_KEYS:
        return
    if head == "optim":
        raise ConfigError(f"{where}: {key}: only {' and '.join(OPTIM_KEYS)} of optim can be searched")
    if head not in fields:
        known = ", ".join(fields) or "none"
        raise ConfigError(
            f"{where}: {key!r} is not a typed parameter of method {method!r} (its parameters: {known}) "
            f"nor one of {', '.join(OPTIM_KEYS)}"
        )
    if sub and not _is_mapping(fields[head]):
        raise ConfigError(f"{where}: {key}: {head!r} of method {method!r} has no keys (not a mapping)")
    if not sub and _is_mapping(fields[head]):
        raise ConfigError(f"{where}: {key}: a mapping parameter is searched per entry, e.g. {head}.<name>")


def split_sample(sample: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sampled point ``{key: value}`` as (optim settings ``{"lr", "weight_decay"}``, method
    parameters, with ``<parameter>.<key>`` entries gathered into that parameter's mapping)."""
    optim: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in sample.items():
        if key in OPTIM_KEYS:
            optim[key.split(".", 1)[1]] = value
            continue
        head, _, sub = key.partition(".")
        if sub:
            params.setdefault(head, {})[sub] = value
        else:
            params[head] = value
    return optim, params


def _check_values(where: str, method: str, base_params: Mapping[str, Any], dims: list[Dimension]) -> None:
    """Each end (and each choice) of every dimension is a value the method accepts."""
    for d in dims:
        for value in d.examples():
            optim, params = split_sample({d.key: value})
            if "lr" in optim and not (isinstance(value, int | float) and value > 0):
                raise ConfigError(f"{where}: optim.lr: {value!r} is not a positive learning rate")
            if "weight_decay" in optim and not (isinstance(value, int | float) and value >= 0):
                raise ConfigError(f"{where}: optim.weight_decay: {value!r} is not a number >= 0")
            if params:
                try:
                    validate_params(method, {**base_params, **params}, prefix="")
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {d.key}: {value!r} is refused: {exc}") from None


def load_space(path: Path, method: str, base_params: Mapping[str, Any] | None = None) -> SearchSpace:
    """The search space in ``path`` for ``method`` (registered name; ``base_params``: the grid
    variant's parameters the samples go over), checked whole (module docstring)."""
    where = f"search space {path}"
    raw = read_yaml_file(path, "search space")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a mapping of setting -> distribution (e.g. optim.lr: ...)")
    fields = _parameter_fields(method)
    dims = []
    for key, value in raw.items():
        key = str(key)
        _check_key(where, method, key, fields)
        dims.append(_dimension(where, key, value))
    _check_values(where, method, dict(base_params or {}), dims)
    return SearchSpace(method, Path(path), tuple(dims))
