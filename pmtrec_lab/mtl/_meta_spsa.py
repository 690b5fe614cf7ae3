"""Moved to ``pmtrec_lab.mtl.pmtrec.meta_spsa`` (PMTRec's stages, issue 25); this module keeps the
old import path working."""

from pmtrec_lab.mtl.pmtrec.meta_spsa import FLOOR, PATTERN, MetaLossSPSA

__all__ = ["FLOOR", "PATTERN", "MetaLossSPSA"]
