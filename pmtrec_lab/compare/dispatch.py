"""Moved: the remote driver is ``pmtrec_lab.execution.dispatch``, the grid's use of it
``pmtrec_lab.compare.remote_grid``, ``RunsFailedError`` ``pmtrec_lab.errors``; this path
re-exports them."""

from pmtrec_lab.compare.remote_grid import run_grid_remote
from pmtrec_lab.errors import RunsFailedError
from pmtrec_lab.execution.dispatch import RunTiming

__all__ = ["RunTiming", "RunsFailedError", "run_grid_remote"]
