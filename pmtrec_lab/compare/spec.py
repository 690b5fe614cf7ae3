"""A comparison grid's specification: which datasets, methods, seeds and learning rates, and the
configuration of each run. The method lists come from the method registry (``pmtrec_lab.mtl``):
the baselines are the registered methods of family ``"baseline"`` (the strongest baseline of a
comparison is chosen among them), the PMTRec family those of family ``"pmtrec"``.

A grid is checked whole when it loads (``load_grid``, ``GridSpec``; ``run_grid`` checks again),
before any run trains or any file is written: every list non-empty and free of repeats (a seed
listed twice would count one run twice in the tables; two learning rates that print alike would
share a run folder and a table label), every method registered or a label under ``variants``
(whose parameters are validated like a run's), every dataset registered, no unknown key, and the
``base`` configuration valid on every dataset. Errors are ``ConfigError`` lines naming the grid
file, the key and what was expected.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from pmtrec_lab.config import (
    DEFAULT_DIM,
    DEFAULT_LR,
    SHORT_RUN_LR,
    EvalConfig,
    OptimConfig,
    RunConfig,
    load_config,
)
from pmtrec_lab.errors import ConfigError, format_validation_errors
from pmtrec_lab.eval.groups import ACTIVITY_LEVELS, SOCIAL_LEVELS
from pmtrec_lab.mtl import get_entry, method_names, resolve_params, validate_params
from pmtrec_lab.yaml_files import load_yaml_text, read_yaml_file

__all__ = [
    "GROUP_ORDER",
    "METRIC",
    "GridSpec",
    "baseline_methods",
    "is_baseline",
    "load_grid",
    "leave_out_of",
    "lr_label",
    "method_of",
    "pmtrec_family",
    "resolved_method",
    "run_config",
    "tuned_choice",
    "unit_lrs",
    "validate_grid",
]

METRIC = "ndcg@20"


#: the order user groups are listed in (activity thirds, then social)
GROUP_ORDER = {level: i for i, level in enumerate((*ACTIVITY_LEVELS, *SOCIAL_LEVELS))}

#: the keys a variant under ``variants`` may have (``leave_out``: auxiliary tasks the variant's runs
#: train without, by name, e.g. ``[social:trust]``; the benefit map's leave-one-task-out runs)
VARIANT_KEYS = ("name", "params", "leave_out")
#: the keys of a tuned configuration under ``tuned.<dataset>.<method>``
TUNED_KEYS = ("lr", "weight_decay", "params", "source")


def baseline_methods() -> tuple[str, ...]:
    """The registered baselines, in display order (the strongest is chosen among these)."""
    return method_names("baseline")


def pmtrec_family() -> tuple[str, ...]:
    """PMTRec and its registered named configurations, in display order."""
    return method_names("pmtrec")


def is_baseline(method: str) -> bool:
    """True for a registered method of family ``"baseline"``; a grid variant (a label that is not a
    registered name) counts as a baseline unless its name starts with ``pmtrec``."""
    try:
        return get_entry(method).family == "baseline"
    except ValueError:
        return not method.startswith("pmtrec")


def lr_label(lr: float) -> str:
    """How a learning rate is written in run folder names and tables (``lr0.003``): ``:g``, six
    significant digits, so two rates that agree in those would read alike (the grid refuses them)."""
    return f"lr{lr:g}"


def _is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _repeats(values: Iterable[Any]) -> list[Any]:
    """The values listed more than once, in first-seen order."""
    return [v for v, n in Counter(values).items() if n > 1]


def _not_empty(key: str, values: Sequence[Any], what: str) -> None:
    if not values:
        raise ConfigError(f"{key}: empty; expected at least one {what}")


def _no_repeats(key: str, values: Sequence[Any], what: str, why: str) -> None:
    repeated = _repeats(values)
    if repeated:
        listed = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in repeated)
        raise ConfigError(f"{key}: {listed} listed more than once; expected distinct {what} ({why})")


class GridSpec(BaseModel):
    """A comparison grid (YAML). ``base`` is a nested RunConfig dict applied to every run; ``methods``
    defaults to every registered method (the baselines, then the PMTRec family). Validated whole
    (see the module docstring); ``model_copy(update=...)`` skips that, so ``run_grid`` checks again.
    """

    model_config = ConfigDict(extra="forbid")
    datasets: list[str] = Field(default_factory=lambda: ["ciao", "lastfm", "amazon"])
    methods: list[str] = Field(default_factory=lambda: list(method_names()))
    seeds: list[StrictInt] = Field(default_factory=lambda: [0, 1, 2])
    #: the configuration's default learning rate and its short-run one; ``base``'s epochs and
    #: patience are the configuration's defaults too (their one owner: ``config``)
    lrs: list[float] = Field(default_factory=lambda: [DEFAULT_LR, SHORT_RUN_LR])
    base: dict[str, Any] = Field(
        default_factory=lambda: {
            "encoder": {"name": "mf", "dim": DEFAULT_DIM},
            "optim": {"epochs": OptimConfig.model_fields["epochs"].default},
            "eval": {"patience": EvalConfig.model_fields["patience"].default},
            "progress": "log",
        }
    )
    pmtrec: str = "pmtrec"
    #: named method variants usable in ``methods``: label -> {"name": method, "params": {...}}
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: tuned configurations (``compare --tuned DIR``, from ``pmtrec-lab tune``'s ``best.yaml``):
    #: dataset -> method -> {"lr", "weight_decay", "params", "source"}; such a (dataset, method)
    #: runs every seed at its tuned learning rate (no learning-rate phase) with its tuned parameters
    tuned: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, v: list[str]) -> list[str]:
        from pmtrec_lab.data.registry import get_spec

        _not_empty("datasets", v, "registered dataset")
        _no_repeats("datasets", v, "datasets", "a repeated dataset would count its runs twice")
        for name in v:
            try:
                get_spec(name)
            except ValueError as exc:
                raise ConfigError(f"datasets: {exc}") from None
        return v

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, v: list[str]) -> list[str]:
        _not_empty("methods", v, "method")
        _no_repeats("methods", v, "methods", "a repeated method would count its runs twice")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        _not_empty("seeds", v, "seed (the first one chooses the learning rate)")
        _no_repeats("seeds", v, "seeds", "a repeated seed would count one run twice in the tables")
        return v

    @field_validator("lrs")
    @classmethod
    def _distinct_lrs(cls, v: list[float]) -> list[float]:
        _not_empty("lrs", v, "learning rate")
        bad = [lr for lr in v if not (math.isfinite(lr) and lr > 0)]
        if bad:
            raise ConfigError(f"lrs: {', '.join(map(repr, bad))}: expected positive finite learning rates")
        _no_repeats("lrs", v, "learning rates", "a repeated rate would count one run twice in the tables")
        by_label: dict[str, list[float]] = {}
        for lr in v:
            by_label.setdefault(lr_label(lr), []).append(lr)
        for label, same in by_label.items():
            if len(same) > 1:
                quantity = "both" if len(same) == 2 else "all"
                raise ConfigError(
                    f"lrs: {' and '.join(map(repr, same))} would {quantity} be written {label} (run folders, "
                    "tables); expected learning rates that differ within six significant digits"
                )
        return v

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for label, variant in v.items():
            key = f"variants.{label}"
            unknown = [k for k in variant if k not in VARIANT_KEYS]
            if unknown:
                listed = ", ".join(map(repr, unknown))
                raise ConfigError(f"{key}: unknown key(s) {listed}; expected {', '.join(VARIANT_KEYS)}")
            if "name" not in variant:
                raise ConfigError(f"{key}.name: missing; expected the registered method the variant runs")
            try:
                get_entry(variant["name"])
            except (ValueError, TypeError):
                raise ConfigError(
                    f"{key}.name: unknown method {variant['name']!r}; known: {', '.join(method_names())}"
                ) from None
            params = variant.get("params") or {}
            if not isinstance(params, Mapping):
                raise ConfigError(f"{key}.params: expected a mapping, got {type(params).__name__}")
            validate_params(variant["name"], params, prefix=f"{key}.params")
            if "leave_out" in variant:
                _check_leave_out(variant["leave_out"], f"{key}.leave_out")
        return v

    @model_validator(mode="after")
    def _known_methods_and_valid_base(self) -> GridSpec:
        """Every label names a method (registered or a variant); ``base`` is a valid run
        configuration on every dataset (checked with the first method, lr and seed)."""
        registered = set(method_names())
        unknown = [m for m in self.methods if m not in self.variants and m not in registered]
        if unknown:
            raise ConfigError(
                f"methods: unknown method(s) {', '.join(map(repr, unknown))}; expected a registered "
                f"method (known: {', '.join(method_names())}) or a label under variants"
            )
        if self.pmtrec not in self.variants and self.pmtrec not in registered:
            raise ConfigError(
                f"pmtrec: {self.pmtrec!r} is neither a registered method nor a label under variants; "
                "expected the method the tables test against the strongest baseline"
            )
        for dataset in self.datasets:
            try:
                run_config(self, dataset, self.methods[0], self.lrs[0], self.seeds[0], None)
            except ConfigError as exc:
                raise ConfigError(f"base (on dataset {dataset!r}): {exc}") from None
            for method in self.methods:  # tasks left out must be tasks of every dataset
                if leave_out_of(self, method):
                    try:
                        run_config(self, dataset, method, self.lrs[0], self.seeds[0], None)
                    except ConfigError as exc:
                        raise ConfigError(f"{exc} (on dataset {dataset!r})") from None
        self._check_tuned()
        return self

    def record(self) -> dict[str, Any]:
        """The grid as ``grid.resolved.yaml`` records it (``tuned`` only when the grid is tuned)."""
        data = self.model_dump()
        if not data["tuned"]:
            del data["tuned"]
        return data

    def _check_tuned(self) -> None:
        """Every tuned entry names a dataset and method of the grid, a positive learning rate, a
        weight decay >= 0, and parameters valid for the method (``validate_params``)."""
        for dataset, methods in self.tuned.items():
            if dataset not in self.datasets:
                raise ConfigError(f"tuned.{dataset}: not a dataset of the grid ({', '.join(self.datasets)})")
            for method, choice in methods.items():
                key = f"tuned.{dataset}.{method}"
                if method not in self.methods:
                    raise ConfigError(f"{key}: not a method of the grid ({', '.join(self.methods)})")
                unknown = [k for k in choice if k not in TUNED_KEYS]
                if unknown:
                    raise ConfigError(f"{key}: unknown key(s) {unknown}; expected {', '.join(TUNED_KEYS)}")
                lr, wd = choice.get("lr"), choice.get("weight_decay", 0.0)
                if not (_is_number(lr) and lr > 0):
                    raise ConfigError(f"{key}.lr: expected a positive finite learning rate, got {lr!r}")
                if not (_is_number(wd) and wd >= 0):
                    raise ConfigError(f"{key}.weight_decay: expected a finite number >= 0, got {wd!r}")
                name, params = method_of(self, method, dataset)
                validate_params(name, params, prefix=f"{key}.params")


def _unknown_key(key: str) -> str:
    return f"unknown key {key!r}; expected one of: {', '.join(GridSpec.model_fields)}"


def validate_grid(data: Mapping[str, Any], where: str = "grid") -> GridSpec:
    """The grid of ``data``, or a one-line ``ConfigError`` starting with ``where`` (the grid file)."""
    try:
        return GridSpec.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(f"{where}: {format_validation_errors(err, unknown=_unknown_key)}") from None
    except ConfigError as exc:  # raised outside a validator (e.g. by a method's own check)
        raise ConfigError(f"{where}: {exc}") from None


def _read_grid_file(path: Path) -> dict[str, Any]:
    """The top-level mapping of a grid file; a missing, unreadable, non-YAML or non-mapping file
    is one ``ConfigError`` line naming the file (and, for YAML, the line)."""
    where = f"grid file {path}"
    loaded = read_yaml_file(path, "grid file")
    if loaded is None:  # an empty file: the default grid
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{where}: expected a mapping of grid keys ({', '.join(GridSpec.model_fields)}) at the top "
            f"level, got a {type(loaded).__name__}"
        )
    return loaded


def load_grid(path: str | Path | None, overrides: Sequence[str] = ()) -> GridSpec:
    """The grid of a YAML file (the defaults without one), with ``overrides`` (``--set KEY=VALUE``,
    the value YAML) replacing top-level keys; validated whole (a ``ConfigError`` naming the file)."""
    raw = _read_grid_file(Path(path)) if path is not None else {}
    where = f"grid file {path}" if path is not None else "the default grid"
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. seeds=[0]")
        if key not in GridSpec.model_fields:
            raise ConfigError(
                f"--set {key}: unknown grid key; expected one of: {', '.join(GridSpec.model_fields)}"
            )
        raw[key] = load_yaml_text(value, f"--set {item!r}: the value")
    if overrides:
        where += f" (with --set {', '.join(overrides)})"
    return validate_grid(raw, where)


def tuned_choice(spec: GridSpec, dataset: str | None, method: str) -> dict[str, Any] | None:
    """The tuned configuration of (``dataset``, ``method``), or None (untuned; ``dataset`` None)."""
    if dataset is None:
        return None
    return spec.tuned.get(dataset, {}).get(method)


def unit_lrs(spec: GridSpec, dataset: str, method: str) -> list[float]:
    """The learning rates a (dataset, method) trains seed 0 at: its tuned rate alone when tuned,
    else the grid's ``lrs``."""
    choice = tuned_choice(spec, dataset, method)
    return [float(choice["lr"])] if choice is not None else list(spec.lrs)


def method_of(spec: GridSpec, method: str, dataset: str | None = None) -> tuple[str, dict[str, Any]]:
    """The registered method a grid label runs and the parameters the grid gives it (a variant's,
    or none for a registered name; on a ``dataset`` where it is tuned, the tuned ones over them)."""
    variant = spec.variants.get(method)
    name, params = (method, {}) if variant is None else (variant["name"], dict(variant.get("params") or {}))
    choice = tuned_choice(spec, dataset, method)
    if choice is not None:
        params.update(choice.get("params") or {})
    return name, params


def resolved_method(spec: GridSpec, method: str, dataset: str | None = None) -> dict[str, Any]:
    """``{"name": registered method, "params": every parameter it runs with}`` for a grid label:
    defaults < preset < the variant's ``params`` < tuned ones (``resolve_params``), so spellings
    that mean the same run agree (``rho: 0`` and ``rho: 0.0``; a default written out or omitted)."""
    name, params = method_of(spec, method, dataset)
    return {"name": name, "params": resolve_params(name, params)}


def _check_leave_out(names: Any, key: str) -> None:
    """A variant's ``leave_out``: a non-empty list of distinct task names."""
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{key}: expected a non-empty list of auxiliary task names (e.g. [social:trust]), "
                          f"got {names!r}")
    _no_repeats(key, names, "task names", "a task is left out once")


def leave_out_of(spec: GridSpec, method: str) -> list[str]:
    """The auxiliary tasks a grid label's runs leave out (``variants.<label>.leave_out``), else []."""
    variant = spec.variants.get(method)
    return list(variant.get("leave_out") or []) if variant is not None else []


def _without_tasks(cfg: RunConfig, names: list[str], where: str) -> RunConfig:
    """``cfg`` with the named auxiliary tasks left out of the tasks it would train (``tasks.include``
    if given, else the dataset's enabled defaults, in their order)."""
    from pmtrec_lab.data.registry import spec_for_data

    if cfg.tasks.include is not None:
        current = list(cfg.tasks.include)
    else:
        current = [t.name for t in spec_for_data(cfg.data).tasks if t.enabled]
    missing = [n for n in names if n not in current]
    if missing:
        raise ConfigError(
            f"{where}: {', '.join(map(repr, missing))} is not an auxiliary task this run trains on dataset "
            f"{cfg.data.name!r}; expected one of: {', '.join(current) or '(none)'}"
        )
    return cfg.updated({"tasks": {"include": [n for n in current if n not in names]}})


def _merged(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``, nested mappings merged key by key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def run_config(
    spec: GridSpec, dataset: str, method: str, lr: float, seed: int, data_dir: str | None
) -> RunConfig:
    """The configuration of one run: ``base``, with the dataset, method (a variant's registered
    method and parameters, over any ``base`` method parameters), learning rate and seed merged in
    before it is validated, so a ``base`` setting that depends on the dataset (``tasks.include``)
    is checked against the run's dataset, not the default one."""
    name, params = method_of(spec, method, dataset)
    base_data = spec.base.get("data")
    base_dir = base_data.get("data_dir") if isinstance(base_data, Mapping) else None
    optim: dict[str, Any] = {"lr": lr}
    choice = tuned_choice(spec, dataset, method)
    if choice is not None:
        optim["weight_decay"] = float(choice.get("weight_decay", 0.0))
    changes = {
        "data": {"name": dataset, "data_dir": data_dir or base_dir},
        "method": {"name": name, "params": params},
        "optim": optim,
        "seed": seed,
    }
    cfg = load_config(base=_merged(spec.base, changes))
    leave_out = leave_out_of(spec, method)
    return _without_tasks(cfg, leave_out, f"variants.{method}.leave_out") if leave_out else cfg
