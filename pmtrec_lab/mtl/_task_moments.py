"""Moved to ``pmtrec_lab.mtl.pmtrec.moments`` (PMTRec's stages, issue 25); this module keeps the
old import path working."""

from pmtrec_lab.mtl.pmtrec.moments import EPS, TaskMoments

__all__ = ["EPS", "TaskMoments"]
