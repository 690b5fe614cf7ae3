"""Multi-task weighting methods: PMTRec and the baselines, behind one interface (``base``).

``aggregate(name, G [K, D], **params) -> [D]`` applies a gradient-manipulation method to one
gradient matrix. Methods are found through ``registry`` (built-in modules, entry points, and any
module that calls ``register``); each declares its parameters as a typed class (``params``).
"""

from __future__ import annotations

from typing import Any

import torch

from pmtrec_lab.mtl.base import (
    AGGREGATORS,
    META_SPLIT_NEEDS,
    CombineResult,
    EqualWeighting,
    Need,
    StepContext,
    WeightingMethod,
)
from pmtrec_lab.mtl.params import MAIN_TASK, MethodParams, MethodParamsError
from pmtrec_lab.mtl.registry import (
    METHODS,
    build_method,
    get_entry,
    make_method,
    method_names,
    method_table,
    method_table_markdown,
    register,
    register_preset,
    resolve_params,
    typed_params,
    upgrade_params,
    validate_params,
)
from pmtrec_lab.mtl.registry import _load as _load_methods

__all__ = [
    "AGGREGATORS",
    "MAIN_TASK",
    "METHODS",
    "META_SPLIT_NEEDS",
    "CombineResult",
    "EqualWeighting",
    "MethodParams",
    "MethodParamsError",
    "Need",
    "StepContext",
    "WeightingMethod",
    "aggregate",
    "build_method",
    "get_entry",
    "make_method",
    "method_names",
    "method_table",
    "method_table_markdown",
    "register",
    "register_preset",
    "resolve_params",
    "typed_params",
    "upgrade_params",
    "validate_params",
]


def aggregate(name: str, G: torch.Tensor, seed: int = 0, **params: Any) -> torch.Tensor:
    """Combine the rows of ``G`` [K, D] into one update direction [D] with method ``name``."""
    _load_methods()
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return AGGREGATORS[name](G, generator=gen, **params)
