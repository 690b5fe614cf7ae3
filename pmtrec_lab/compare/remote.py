"""Moved to ``pmtrec_lab.execution.remote`` (run execution is its own layer, below compare and
tune); this path re-exports it."""

from pmtrec_lab.execution.remote import CRASH_ONCE_ENV, RunJob, remote_config, train_remote

__all__ = ["CRASH_ONCE_ENV", "RunJob", "remote_config", "train_remote"]
