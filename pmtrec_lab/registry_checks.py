"""The registries' checks that configuration calls, without importing the registries.

``config`` sits below ``data`` and ``encoders`` (they read configurations), yet a configuration
is checked at load against their registries: the dataset and its tasks, the encoder. Each
registry registers its checks here when it is imported (``register``); ``config`` asks for them
by kind (``checks``). When a kind is asked for before its registry was imported (a
configuration validated on its own), the built-in registry providing it is imported by name
(``PROVIDERS``), as a plug-in would be: the dependency points from the registry to this table.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

__all__ = ["PROVIDERS", "checks", "register"]

#: kind -> the module that registers its checks (imported on first use)
PROVIDERS = {
    # find(name), get_spec(name), spec_for_data(data), atomic_settings(data), atomic_task_class(),
    # check_atomic_tasks(tasks, where)
    "dataset": "pmtrec_lab.data.registry",
    "encoder": "pmtrec_lab.encoders.registry",  # names(), classes (name -> encoder class)
}

_CHECKS: dict[str, SimpleNamespace] = {}


def register(kind: str, **functions: Any) -> None:
    """Register (or add to) the checks of ``kind``."""
    _CHECKS.setdefault(kind, SimpleNamespace()).__dict__.update(functions)


def checks(kind: str) -> SimpleNamespace:
    """The checks of ``kind``, its provider imported first when none registered them yet."""
    if kind not in _CHECKS:
        importlib.import_module(PROVIDERS[kind])
    return _CHECKS[kind]
