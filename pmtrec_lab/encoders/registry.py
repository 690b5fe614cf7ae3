"""The encoder registry: ``encoder.name`` in a configuration, ``build_encoder``, and every list of
encoders in the project derive from it (the same shape as the method registry,
``pmtrec_lab.mtl.registry``).

An encoder is an ``Encoder`` subclass registered under a name by ``register_encoder(name)`` (a
class decorator) in its own module. It is built from the run's ``EncoderOptions`` by its
``from_options(dataset, options)`` class method (``Encoder``'s default passes the sizes and
``dim``; encoders that need more override it). Where encoders come from:

- the built-in modules of ``pmtrec_lab.encoders`` (every public module of the package is imported
  on first use, so a new encoder, say a GAT, is one file that calls ``register_encoder`` plus its
  test; nothing else to edit);
- the entry-point group ``pmtrec_lab.encoders`` of any installed package (each entry point names a
  module or object whose import registers encoders);
- any module a user imports that calls ``register_encoder`` (tests do this).

``DISPLAY_ORDER`` fixes the order the built-ins are listed in (the default first); encoders it
does not name follow in registration order. It decides order only, never whether an encoder is
known.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from pmtrec_lab.encoders.base import Encoder, EncoderOptions
from pmtrec_lab.plugins import import_public_modules, load_entry_points
from pmtrec_lab.registry_checks import register as register_checks

if TYPE_CHECKING:
    from pmtrec_lab.data.types import RecDataset

__all__ = [
    "DISPLAY_ORDER",
    "ENCODERS",
    "ENTRY_POINT_GROUP",
    "build_encoder",
    "encoder_names",
    "get_encoder",
    "register_encoder",
]

log = logging.getLogger("pmtrec_lab.encoders")

ENTRY_POINT_GROUP = "pmtrec_lab.encoders"
#: modules of the package that define no encoder and are not scanned
_NOT_ENCODER_MODULES = frozenset({"registry", "base"})
#: The order built-in encoders are listed in. Order only; see the module docstring.
DISPLAY_ORDER: tuple[str, ...] = ("mf", "lightgcn", "hetero")

E = TypeVar("E", bound=type[Encoder])

_REGISTRY: dict[str, type[Encoder]] = {}
_loaded = False


def register_encoder(name: str) -> Callable[[E], E]:
    """Class decorator: register an ``Encoder`` subclass as ``encoder.name = name``.

    Registering another class under a taken name is an error; registering a class again (the same
    class, or a class of the same module and name: a module reloaded in a notebook) replaces it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an encoder name must be a non-empty string, got {name!r}")

    def decorate(cls: E) -> E:
        if not (isinstance(cls, type) and issubclass(cls, Encoder)):
            raise TypeError(f"encoder {name!r}: register_encoder needs an Encoder subclass, got {cls!r}")
        old = _REGISTRY.get(name)
        if old is not None and old is not cls and _qualified(old) != _qualified(cls):
            raise ValueError(f"encoder name {name!r} registered twice ({_qualified(old)}, {_qualified(cls)})")
        _REGISTRY[name] = cls
        return cls

    return decorate


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load() -> None:
    """Import the built-in encoder modules and the entry points' (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import_public_modules(__package__, skip=_NOT_ENCODER_MODULES)
    load_entry_points(entry_points(group=ENTRY_POINT_GROUP), "encoder", log)


def encoder_names() -> tuple[str, ...]:
    """Registered encoder names: the built-ins in ``DISPLAY_ORDER``, then the others as registered."""
    _load()
    rank = {n: i for i, n in enumerate(DISPLAY_ORDER)}
    order = {n: i for i, n in enumerate(_REGISTRY)}
    return tuple(sorted(_REGISTRY, key=lambda n: (rank.get(n, len(rank)), order[n])))


def get_encoder(name: str) -> type[Encoder]:
    """The class registered as ``name``; an unknown name is an error listing the known ones."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(encoder_names())}") from None


class _EncoderClasses(Mapping[str, type[Encoder]]):
    """Read-only view: encoder name -> class; iterating gives the names."""

    def __getitem__(self, name: str) -> type[Encoder]:
        _load()
        return _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter(encoder_names())

    def __len__(self) -> int:
        return len(encoder_names())

    def __contains__(self, name: object) -> bool:
        _load()
        return name in _REGISTRY

    def __repr__(self) -> str:
        return f"ENCODERS({', '.join(encoder_names())})"


#: name -> class, for every registered encoder
ENCODERS: Mapping[str, type[Encoder]] = _EncoderClasses()


def build_encoder(
    name: str,
    dataset: RecDataset,
    dim: int,
    num_layers: int,
    exclude: Iterable[str] = frozenset(),
    split_relations: Mapping[str, float] | None = None,
    split_seed: int = 0,
    propagation: str = "auto",
    sparse: bool = False,
) -> Encoder:
    """The encoder registered as ``name`` for ``dataset``; seed with ``torch.manual_seed`` first.

    Each encoder takes from the options what it uses: ``mf`` ignores ``num_layers`` and the graph
    arguments; ``lightgcn`` propagates over training interactions only, so ``exclude`` /
    ``split_relations`` cannot leak anything into it and are ignored; ``hetero`` honours all of
    them (see ``HeteroEncoder``). ``sparse``: tables with sparse gradients, for
    ``torch.optim.SparseAdam`` (``optim.sparse``), only for encoders with ``supports_sparse``.
    """
    cls = get_encoder(name)
    if sparse and not cls.supports_sparse:
        able = [n for n in encoder_names() if _REGISTRY[n].supports_sparse]
        raise ValueError(
            f"optim.sparse (sparse embedding gradients) needs an encoder with sparse tables "
            f"({', '.join(able) or 'none registered'}), not {name!r}: graph encoders propagate over "
            "the whole tables"
        )
    options = EncoderOptions(
        dim=int(dim),
        num_layers=int(num_layers),
        exclude=frozenset(exclude),
        split_relations=dict(split_relations or {}),
        split_seed=int(split_seed),
        propagation=propagation,
        sparse=bool(sparse),
    )
    return cls.from_options(dataset, options)


register_checks("encoder", names=encoder_names, classes=ENCODERS)  # config's checks (registry_checks)
