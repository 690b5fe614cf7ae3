"""Moved to ``pmtrec_lab.execution.ray_executor`` (run execution is its own layer, below compare and
tune); this path re-exports it."""

from pmtrec_lab.execution.ray_executor import DEFAULT_MAX_RETRIES, RayExecutor

__all__ = ["DEFAULT_MAX_RETRIES", "RayExecutor"]
