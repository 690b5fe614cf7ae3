"""Moved to ``pmtrec_lab.execution.resources`` (run execution is its own layer, below compare and
tune); this path re-exports it."""

from pmtrec_lab.execution.resources import RunResources, parse_resources

__all__ = ["RunResources", "parse_resources"]
