"""A comparison grid's specification: which datasets, methods, seeds and learning rates, and the
configuration of each run. The method lists come from the method registry (``pmtrec_lab.mtl``):
the baselines are the registered methods of family ``"baseline"`` (the strongest baseline of a
comparison is chosen among them), the PMTRec family those of family ``"pmtrec"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pmtrec_lab.config import DEFAULT_DIM, RunConfig, load_config
from pmtrec_lab.eval.groups import ACTIVITY_LEVELS, SOCIAL_LEVELS
from pmtrec_lab.mtl import get_entry, method_names

__all__ = [
    "GROUP_ORDER",
    "METRIC",
    "GridSpec",
    "baseline_methods",
    "is_baseline",
    "load_grid",
    "pmtrec_family",
    "run_config",
]

METRIC = "ndcg@20"


#: the order user groups are listed in (activity thirds, then social)
GROUP_ORDER = {level: i for i, level in enumerate((*ACTIVITY_LEVELS, *SOCIAL_LEVELS))}


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


class GridSpec(BaseModel):
    """A comparison grid (YAML). ``base`` is a nested RunConfig dict applied to every run; ``methods``
    defaults to every registered method (the baselines, then the PMTRec family)."""

    model_config = ConfigDict(extra="forbid")
    datasets: list[str] = Field(default_factory=lambda: ["ciao", "lastfm", "amazon"])
    methods: list[str] = Field(default_factory=lambda: list(method_names()))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    lrs: list[float] = Field(default_factory=lambda: [1e-3, 3e-3])
    base: dict[str, Any] = Field(
        default_factory=lambda: {
            "encoder": {"name": "mf", "dim": DEFAULT_DIM},
            "optim": {"epochs": 100},
            "eval": {"patience": 5},
            "progress": "log",
        }
    )
    pmtrec: str = "pmtrec"
    #: named method variants usable in ``methods``: label -> {"name": method, "params": {...}}
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)


def load_grid(path: str | Path | None) -> GridSpec:
    """The grid of a YAML file (the defaults without one)."""
    if path is None:
        return GridSpec()
    return GridSpec.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def run_config(
    spec: GridSpec, dataset: str, method: str, lr: float, seed: int, data_dir: str | None
) -> RunConfig:
    cfg = load_config(base=spec.base)
    variant = spec.variants.get(method, {"name": method, "params": {}})
    return cfg.updated(
        {
            "data": {"name": dataset, "data_dir": data_dir or cfg.data.data_dir},
            "method": {"name": variant["name"], "params": variant.get("params", {})},
            "optim": {"lr": lr},
            "seed": seed,
        }
    )
