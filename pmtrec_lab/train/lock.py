"""One writer per run folder: an exclusive ``flock`` on ``<run>/.lock`` for the run's life.

Two ``train`` commands into one ``--out`` would otherwise interleave their files (config.yaml
from one, checkpoints from the other). The process that trains takes the lock before it writes
anything and holds it until it returns; a second writer fails at once with an error naming the
holder's pid and host (written into the lock file). The lock is the kernel's, so a killed run
leaves no stale lock: the next command takes it and resumes.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from pmtrec_lab.errors import PmtrecError

LOCK_NAME = ".lock"


class RunFolderBusyError(PmtrecError):
    """Another process is training into the same run folder."""


class RunLock:
    """``with RunLock(out):`` holds ``out/.lock`` exclusively, or raises RunFolderBusyError."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusyError(
                f"{self.path.parent} is in use by another training process ({holder}); wait for it "
                "to finish, stop it, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_holder(folder: str | os.PathLike) -> str | None:
    """Who holds ``folder``'s lock ("pid N on host H"), or None when no process does. Takes no
    lock and writes nothing (``evaluate`` asks whether a run marked running still trains)."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
