"""Moved to ``pmtrec_lab.execution.executor_base`` (run execution is its own layer, below compare and
tune); this path re-exports it."""

from pmtrec_lab.execution.executor_base import Executor, ProcessExecutor, SequentialExecutor

__all__ = ["Executor", "ProcessExecutor", "SequentialExecutor"]
