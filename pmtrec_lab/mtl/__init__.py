"""Multi-task weighting methods: PMTRec and the baselines, behind one interface (``base``).

``aggregate(name, G [K, D], **params) -> [D]`` applies a gradient-manipulation method to one
gradient matrix.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from pmtrec_lab.mtl.base import (
    AGGREGATORS,
    METHODS,
    CombineResult,
    EqualWeighting,
    StepContext,
    WeightingMethod,
    make_method,
)

# Every method module registers itself on import; one file per method.
_METHOD_MODULES = (
    "single_task", "uncertainty", "dwa", "gradnorm", "famo", "metabalance",
    "mgda", "pcgrad", "cagrad", "imtl", "aligned_mtl", "nash_mtl", "dbmtl",
    "pmtrec", "presets",
)
for _m in _METHOD_MODULES:
    importlib.import_module(f"pmtrec_lab.mtl.{_m}")

__all__ = [
    "AGGREGATORS",
    "METHODS",
    "CombineResult",
    "EqualWeighting",
    "StepContext",
    "WeightingMethod",
    "aggregate",
    "make_method",
]


def aggregate(name: str, G: torch.Tensor, seed: int = 0, **params: Any) -> torch.Tensor:
    """Combine the rows of ``G`` [K, D] into one update direction [D] with method ``name``."""
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return AGGREGATORS[name](G, generator=gen, **params)
