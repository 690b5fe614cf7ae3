"""Moved to ``pmtrec_lab.execution.executors`` (run execution is its own layer, below compare and
tune); this path re-exports it."""

from pmtrec_lab.execution.executors import (
    EXECUTORS,
    Executor,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    make_executor,
)

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "RayExecutor", "SequentialExecutor", "make_executor"]
