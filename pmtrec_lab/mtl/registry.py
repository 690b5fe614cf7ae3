"""The method registry: every method list in the project (the grid's baselines, the PMTRec family,
the CLI's choices, the documentation table, the tests) derives from it.

A method is registered explicitly, by ``register`` (a class decorator) in its own module, or as a
*preset*, a named parameter instance of a registered class (``register_preset``: PMTRec's
ablations). Where methods come from:

- the built-in modules of ``pmtrec_lab.mtl`` (every public module of the package is imported on
  first use, so a new method is one file that calls ``register``; nothing else to edit);
- the entry-point group ``pmtrec_lab.methods`` of any installed package (each entry point names
  a module or object whose import registers methods);
- any module a user imports that calls ``register`` (tests do this).

Each entry has a ``family``: ``"baseline"`` (the methods PMTRec is compared against; the
strongest baseline of a comparison is chosen among these) or ``"pmtrec"`` (PMTRec and its named
configurations). ``DISPLAY_ORDER`` fixes the order the built-ins are listed in (tables, grids);
methods it does not name follow in registration order. It decides order only, never whether a
method is known.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pmtrec_lab.mtl.params import MethodParams, MethodParamsError
from pmtrec_lab.plugins import import_public_modules, load_entry_points

if TYPE_CHECKING:
    from pmtrec_lab.mtl.base import WeightingMethod

__all__ = [
    "DISPLAY_ORDER",
    "ENTRY_POINT_GROUP",
    "FAMILIES",
    "METHODS",
    "MethodEntry",
    "build_method",
    "get_entry",
    "load_plugins",
    "make_method",
    "method_names",
    "method_table",
    "method_table_markdown",
    "params_table_markdown",
    "register",
    "register_preset",
    "resolve_params",
    "typed_params",
    "upgrade_params",
    "validate_params",
]

log = logging.getLogger("pmtrec_lab.mtl")

ENTRY_POINT_GROUP = "pmtrec_lab.methods"
Family = Literal["baseline", "pmtrec"]
FAMILIES: tuple[str, ...] = ("baseline", "pmtrec")

#: The order built-in methods are listed in: the baselines roughly by kind (loss weighting, then
#: gradient manipulation), then PMTRec and its configurations. Order only; see the module docstring.
DISPLAY_ORDER: tuple[str, ...] = (
    "single-task", "ew", "uw", "dwa", "gradnorm", "mgda", "pcgrad", "cagrad", "imtl-g",
    "aligned-mtl", "nash-mtl", "famo", "db-mtl", "metabalance", "static-lambda", "gcs",
    "pmtrec", "pmtrec-no-personalization", "pmtrec-no-align", "pmtrec-no-schedule",
    "pmtrec-no-gmb", "pmtrec-gmb", "ew-align", "ew-gmb",
)  # fmt: skip


@dataclass(frozen=True)
class MethodEntry:
    """One registered method: a class and, for a preset, the parameters it fixes."""

    name: str
    cls: type[WeightingMethod]
    family: str
    summary: str
    #: parameters the preset fixes (user parameters override them); empty for a plain class
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: extra check on the resolved parameters (raises ValueError), e.g. "GMB must be on"
    check: Callable[[MethodParams], None] | None = None

    @property
    def params_class(self) -> type[MethodParams]:
        return self.cls.Params

    @property
    def is_preset(self) -> bool:
        return self.cls.name != self.name


_REGISTRY: dict[str, MethodEntry] = {}
_loaded = False


def _first_sentence(doc: str | None) -> str:
    """The docstring's first sentence (up to the first ". " or ": "), on one line."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    for stop in (". ", ": "):
        head, sep, _ = text.partition(stop)
        if sep:
            text = head
    return text.rstrip(".")


def _add(entry: MethodEntry) -> None:
    if entry.family not in FAMILIES:
        raise ValueError(f"method {entry.name!r}: family must be one of {FAMILIES}, got {entry.family!r}")
    old = _REGISTRY.get(entry.name)
    if old is not None and (old.cls is not entry.cls or dict(old.overrides) != dict(entry.overrides)):
        raise ValueError(f"method name {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry


def register(cls: type[WeightingMethod]) -> type[WeightingMethod]:
    """Class decorator: register ``cls`` under ``cls.name`` with ``cls.family``."""
    summary = cls.summary or _first_sentence(cls.__doc__)
    _add(MethodEntry(name=cls.name, cls=cls, family=cls.family, summary=summary))
    return cls


def register_preset(
    name: str,
    cls: type[WeightingMethod],
    overrides: Mapping[str, Any],
    summary: str,
    *,
    family: str | None = None,
    check: Callable[[MethodParams], None] | None = None,
) -> MethodEntry:
    """Register a named configuration of ``cls``: ``cls`` built with ``overrides`` (validated now)."""
    cls.Params.build(name, overrides)  # a preset with a bad value fails at import, not in a run
    entry = MethodEntry(
        name=name,
        cls=cls,
        family=family or cls.family,
        summary=summary,
        overrides=MappingProxyType(dict(overrides)),
        check=check,
    )
    _add(entry)
    return entry


def _load() -> None:
    """Import the built-in method modules and the entry points' (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import_public_modules(__package__)
    load_plugins()


def load_plugins() -> None:
    """Import every entry point of the group ``pmtrec_lab.methods`` (again: newly installed
    packages are found; those already registered are left as they are)."""
    load_entry_points(entry_points(group=ENTRY_POINT_GROUP), "method", log)


class _MethodClasses(Mapping[str, "type[WeightingMethod]"]):
    """Read-only view: method name -> class (a preset maps to the class it configures)."""

    def __getitem__(self, name: str) -> type[WeightingMethod]:
        _load()
        return _REGISTRY[name].cls

    def __iter__(self):
        return iter(method_names())

    def __len__(self) -> int:
        _load()
        return len(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        _load()
        return name in _REGISTRY


#: name -> class, for every registered method (presets included)
METHODS: Mapping[str, type[WeightingMethod]] = _MethodClasses()


def _ordered() -> list[MethodEntry]:
    _load()
    rank = {n: i for i, n in enumerate(DISPLAY_ORDER)}
    order = {n: i for i, n in enumerate(_REGISTRY)}
    return sorted(_REGISTRY.values(), key=lambda e: (rank.get(e.name, len(rank)), order[e.name]))


def method_names(family: str | None = None) -> tuple[str, ...]:
    """Registered method names (display order), optionally of one ``family``."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return tuple(e.name for e in _ordered() if family is None or e.family == family)


def get_entry(name: str) -> MethodEntry:
    """The entry of ``name``; an unknown name is an error listing the known ones."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(method_names())}") from None


def upgrade_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for method ``name`` with old spellings converted (``Params.upgrade``, with a
    notice), the given keys only. Configuration loading calls it once; :func:`typed_params` then
    resolves the result without converting again."""
    cls = get_entry(name).params_class
    return cls.upgrade(dict(params), name) if hasattr(cls, "upgrade") else dict(params)


def typed_params(name: str, given: Mapping[str, Any], prefix: str = "method.params") -> MethodParams:
    """The typed parameters ``name`` runs with: class defaults < preset overrides < ``given``,
    where ``given`` is already in today's spelling (:func:`upgrade_params`). Raises
    ``MethodParamsError`` naming ``prefix.field`` and the bound."""
    entry = get_entry(name)
    resolved = entry.params_class.build(name, {**entry.overrides, **given}, prefix)
    if entry.check is not None:
        try:
            entry.check(resolved)
        except ValueError as exc:
            raise MethodParamsError(name, f"method {name!r}: {exc}") from None
    return resolved


def validate_params(name: str, params: Mapping[str, Any], prefix: str = "method.params") -> MethodParams:
    """The typed parameters ``name`` runs with: class defaults < preset overrides < ``params``.

    Raises ``MethodParamsError`` naming ``prefix.field`` and the bound (or ValueError for an
    unknown method). Nothing is built. For parameters that are not a run configuration's (a grid
    variant, a search space's sample); a ``RunConfig`` carries its own (``cfg.method.resolved``).
    """
    return typed_params(name, upgrade_params(name, params), prefix)


def resolve_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter ``name`` runs with, as a plain dict (defaults < preset < ``params``):
    ``validate_params(...).as_dict()``, for parameters that are not a run configuration's."""
    return validate_params(name, params or {}).as_dict()


def build_method(name: str, num_tasks: int, params: MethodParams) -> WeightingMethod:
    """Build registered method ``name`` for ``num_tasks`` tasks from its resolved typed ``params``
    (a ``RunConfig``'s ``method.resolved``): nothing is resolved or validated again."""
    entry = get_entry(name)
    if not isinstance(params, entry.params_class):
        raise TypeError(
            f"method {name!r} takes {entry.params_class.__name__}, got {type(params).__name__}"
        )
    method = entry.cls(num_tasks, params=params)
    method.name = entry.name  # a preset's instance carries the preset's name
    return method


def make_method(name: str, num_tasks: int, **params: Any) -> WeightingMethod:
    """Build registered method ``name`` for ``num_tasks`` tasks with ``params`` over its defaults."""
    return build_method(name, num_tasks, validate_params(name, params))


def method_table(builtin_only: bool = False) -> list[dict[str, str]]:
    """One row per registered method: name, family, what it is, its parameters (defaults; for a
    preset, what it fixes). ``builtin_only``: only the methods this package ships."""
    rows = []
    for e in _ordered():
        if builtin_only and not e.cls.__module__.startswith("pmtrec_lab."):
            continue
        resolved = validate_params(e.name, {}).as_dict()
        if e.is_preset:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in e.overrides.items())
            params = f"`{e.cls.name}` with {params}" if params else f"`{e.cls.name}`"
        else:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in resolved.items()) or "none"
        rows.append({"name": e.name, "family": e.family, "summary": e.summary, "parameters": params})
    return rows


def method_table_markdown(builtin_only: bool = False) -> str:
    """``method_table`` as a Markdown table (docs/reference.md's: ``builtin_only=True``)."""
    lines = ["| method | family | what | parameters (defaults) |", "| --- | --- | --- | --- |"]
    for r in method_table(builtin_only):
        lines.append(f"| `{r['name']}` | {r['family']} | {r['summary']} | {r['parameters']} |")
    return "\n".join(lines)


def params_table_markdown(name: str) -> str:
    """The parameters of method ``name`` as a Markdown table: name, default, meaning (from its
    ``Params`` class: docs/reference.md's PMTRec table is this, checked by a test)."""
    entry = get_entry(name)
    defaults = validate_params(name, {}).as_dict()
    docs = entry.params_class.field_docs()
    lines = ["| parameter | default | meaning |", "| --- | --- | --- |"]
    for key, value in defaults.items():
        meaning = docs.get(key, "").replace("|", "\\|")
        lines.append(f"| `{key}` | {_fmt(value)} | {meaning} |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)
