"""Moved to ``pmtrec_lab.mtl.pmtrec.deviations`` (PMTRec's stages, issue 25); this module keeps the
old import path working."""

from pmtrec_lab.mtl.pmtrec.deviations import EntityDeviation

__all__ = ["EntityDeviation"]
