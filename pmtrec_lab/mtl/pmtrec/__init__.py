"""PMTRec (Yang et al., arXiv 2407.21364): the method (``method``) and its PMTRec-only helpers."""

from __future__ import annotations

from pmtrec_lab.mtl.pmtrec.method import (
    GMB_TARGETS,
    NUM_SIDES,
    SCHEDULES,
    WEIGHT_MODES,
    PMTRec,
    PMTRecParams,
    schedule_beta,
)

__all__ = [
    "GMB_TARGETS",
    "NUM_SIDES",
    "SCHEDULES",
    "WEIGHT_MODES",
    "PMTRec",
    "PMTRecParams",
    "schedule_beta",
]
