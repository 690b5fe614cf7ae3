"""Discovery for the registries (methods, encoders): a package's own modules and other packages'
entry points, so that a new method or encoder is one file and nothing else to edit."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from collections.abc import Collection, Iterable
from importlib.metadata import EntryPoint

__all__ = ["import_public_modules", "load_entry_points"]


def import_public_modules(package: str, skip: Collection[str] = ()) -> None:
    """Import every module of ``package`` whose name does not start with ``_`` (nor is in
    ``skip``), in name order. The package must be imported already (its modules ask for it)."""
    path = sys.modules[package].__path__
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")


def load_entry_points(points: Iterable[EntryPoint], what: str, log: logging.Logger) -> None:
    """Load each entry point (its import registers what it holds); a broken one is logged as a
    warning naming it, so that one bad plug-in does not take the built-ins down."""
    for ep in points:
        try:
            ep.load()
        except Exception as exc:
            log.warning("%s plug-in %s (%s) failed to load: %s", what, ep.name, ep.value, exc)
