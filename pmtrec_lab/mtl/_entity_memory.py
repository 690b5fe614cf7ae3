"""Moved to ``pmtrec_lab.mtl.pmtrec.memory`` (PMTRec's stages, issue 25); this module keeps the
old import path working."""

from pmtrec_lab.mtl.pmtrec.memory import MainGradientMemory

__all__ = ["MainGradientMemory"]
