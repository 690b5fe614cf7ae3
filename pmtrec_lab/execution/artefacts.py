"""A run's artefacts as plain bytes, so a run trained on another machine comes back to the
driver without a shared filesystem.

The worker trains into a temporary folder of its own and packs it (``pack_run``): every file
of the run folder (``config.yaml``, ``status.json``, ``history.json``, ``metrics.json``,
``per_user_test.parquet``, ``groups.json``, ``best.pt``, ``diagnostics/*.parquet``) except
``last.pt`` (only a resume needs it, and a finished run is never resumed) and hidden files (the
lock, temporary files). The driver writes them into the grid's run folder (``write_run``) under
the folder's lock (``train.lock.RunLock``), each file atomically (``paths.atomic_path``), what
an earlier attempt left removed first, and ``metrics.json`` then ``status.json`` last: the
folder counts as finished (``status.json`` says so) only once everything else is there. A
rerun of the grid therefore resumes at the granularity of finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmtrec_lab.paths import atomic_path, write_text_atomic
from pmtrec_lab.train.lock import RunLock
from pmtrec_lab.train.run import make_status, write_json
from pmtrec_lab.train.trainer import clear_run_files, prepare_run_folder

__all__ = ["RunArtefacts", "pack_run", "write_failed_run", "write_run"]

#: files never sent back (``last.pt``: only a resume reads it)
SKIPPED = ("last.pt",)
#: written last, in this order: what marks the run finished comes after everything it describes
WRITTEN_LAST = ("metrics.json", "status.json")


@dataclass
class RunArtefacts:
    """What a remote run returns: its files (relative path -> bytes), the one-line error when it
    failed, and timings (seconds inside the worker's function; ``train_seconds``: ``train``
    itself), with the host it ran on."""

    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0
    host: str = ""
    attempt_note: str = ""

    @property
    def failed(self) -> bool:
        return self.error is not None

    def size(self) -> int:
        return sum(len(b) for b in self.files.values())


def pack_run(run_dir: Path) -> dict[str, bytes]:
    """Every file of ``run_dir`` (recursively, relative POSIX paths) but ``SKIPPED`` and hidden ones."""
    run_dir = Path(run_dir)
    files: dict[str, bytes] = {}
    if not run_dir.is_dir():
        return files
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.as_posix() in SKIPPED or any(p.startswith(".") for p in rel.parts):
            continue
        files[rel.as_posix()] = path.read_bytes()
    return files


def _safe_relative(rel: str) -> Path:
    """``rel`` as a path inside the run folder (no absolute paths, no ``..``)."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"run artefact {rel!r}: not a relative path inside the run folder")
    return p


def write_run(artefacts: RunArtefacts, run_dir: Path) -> None:
    """Write a remote run's files into ``run_dir`` (see the module docstring): under its lock,
    earlier files removed, each file atomic, ``metrics.json`` and ``status.json`` last."""
    run_dir = Path(run_dir)
    prepare_run_folder(run_dir)
    with RunLock(run_dir):
        clear_run_files(run_dir)
        order = [r for r in sorted(artefacts.files) if r not in WRITTEN_LAST]
        order += [r for r in WRITTEN_LAST if r in artefacts.files]
        for rel in order:
            target = run_dir / _safe_relative(rel)
            with atomic_path(target, suffix=target.suffix) as tmp:
                tmp.write_bytes(artefacts.files[rel])


def write_failed_run(
    run_dir: Path, config_yaml: str, error: str, metric: str = "ndcg@20", **fields: Any
) -> None:
    """Mark ``run_dir`` failed with ``error`` when no artefact came back (its worker was lost
    every time it was tried): ``config.yaml`` and a ``status.json`` saying ``failed``."""
    run_dir = Path(run_dir)
    prepare_run_folder(run_dir)
    with RunLock(run_dir):
        clear_run_files(run_dir)
        write_text_atomic(run_dir / "config.yaml", config_yaml)
        status = make_status("failed", metric=metric, error=error, epoch=0, **fields)
        write_json(run_dir / "status.json", status)
