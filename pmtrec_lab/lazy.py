"""Package exports resolved on first use (PEP 562), so that importing a package, or one light
module of it such as its command-line parser, does not import torch, DGL, pandas or Ray.

``pmtrec-lab --help`` registers every subcommand; with eager ``__init__`` imports that alone
loaded the training stack (about 4 s of the 6 s it took). A package lists its public names and the
submodule each lives in; ``from package import name`` and ``package.name`` import that submodule
then, and only then.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the
    submodule (relative to ``package``) that defines it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        vars(sys.modules[package])[name] = value  # cache: the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
