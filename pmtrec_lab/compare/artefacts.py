"""Moved to ``pmtrec_lab.execution.artefacts`` (run execution is its own layer, below compare and
tune); this path re-exports it."""

from pmtrec_lab.execution.artefacts import RunArtefacts, pack_run, write_failed_run, write_run

__all__ = ["RunArtefacts", "pack_run", "write_failed_run", "write_run"]
