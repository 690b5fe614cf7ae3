"""Where datasets are read from and where derived files are written.

Data directory: ``--data-dir`` > ``PMTREC_DATA_DIR`` > ``~/.cache/pmtrec-lab/datasets``
(``$XDG_CACHE_HOME`` honoured). Release files are read from ``<data-dir>/<name>/`` and never
written to. Derived files (the extracted ml-100k release, preprocessed datasets) go to
``PMTREC_CACHE_DIR`` > ``<project>/.cache`` (git-ignored).
"""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pmtrec-lab" / "datasets"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: explicit argument, then PMTREC_DATA_DIR, then the default."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("PMTREC_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return default_data_dir()


def cache_dir() -> Path:
    """Directory for derived files; created on demand."""
    env = os.environ.get("PMTREC_CACHE_DIR")
    path = Path(env).expanduser().resolve() if env else PROJECT_ROOT / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it: POSIX has no plain getter)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    On error the temporary file is removed and ``target`` is untouched, so nothing already
    written is lost or left half-written. The file gets the permissions a plain ``open`` would
    give (``0o666`` less the umask), not ``mkstemp``'s 0600, so a shared results folder stays
    readable by the group the umask allows.

    An ``OSError`` that names no file (the kernel's ``ENOSPC`` from a write or a close, pyarrow's
    write errors) is raised again naming ``target``: "no space left on the device" alone does not
    say which file could not be written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc) or type(exc).__name__, str(target)) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def overwrite_in_place(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` over the existing file ``target`` in its own blocks, then cut it to length.

    The fallback for a small file that must be updated when ``write_text_atomic`` cannot create
    its temporary file (a full disk): the blocks a file already holds can be written over without
    allocating new ones on ext4 and most other file systems. Not atomic: a failure half-way leaves
    the file damaged, which its readers must (and ``status.json``'s do) say and survive."""
    data = text.encode()
    fd = os.open(target, os.O_WRONLY)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
