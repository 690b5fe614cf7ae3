"""Errors that name the file, line, field or parameter at fault and what was expected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class PmtrecError(Exception):
    """Base class for errors a user can act on."""


class DataFormatError(PmtrecError):
    """A data file does not have the expected format."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        where = f"{self.path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}")


class MissingDataError(PmtrecError):
    """Dataset release files are missing."""


class ConfigError(PmtrecError, ValueError):
    """A configuration key or value is invalid (also a ValueError, for callers that catch those)."""


class TrainingDivergedError(PmtrecError):
    """A loss or gradient became NaN or infinite."""


class RunsFailedError(PmtrecError):
    """Some runs of a grid failed (the others finished); ``failed`` lists ``(run, error)``. Raised
    by both the local grid (``compare.grid``) and the remote driver (``execution.dispatch``)."""

    def __init__(self, failed: list[tuple[str, str]], trained: int):
        self.failed = failed
        self.trained = trained
        first, error = failed[0]
        others = [run for run, _ in failed[1:]]
        more = ""
        if others:
            more = f"; also failed: {', '.join(others[:5])}" + (" ..." if len(others) > 5 else "")
        super().__init__(
            f"compare: {len(failed)} run(s) failed, the others finished: {first}: {error}{more}; see the "
            "progress table (progress.csv, summary.md); rerun with --retry-failed to retry them"
        )


def format_validation_errors(
    err: Any,
    prefix: str = "",
    unknown: Callable[[str], str] | None = None,
    own_errors: bool = True,
) -> str:
    """A pydantic ``ValidationError`` as one line, the package's one formatter (configuration,
    grid, method parameters): each error as ``<prefix>.<field>: message (got value)``; a key the
    model does not take as ``unknown(key)`` (default ``unknown key 'key'``); with ``own_errors``, a
    ``ConfigError`` raised by a validator (which names its keys itself), or any error of a check
    across fields (no location), as its own message."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else prefix or loc
        error = e.get("ctx", {}).get("error")
        if own_errors and (isinstance(error, ConfigError) or (not loc and error is not None)):
            parts.append(str(error))
        elif e["type"] == "extra_forbidden":
            parts.append(unknown(where) if unknown else f"unknown key {where!r}")
        elif not where:
            parts.append(f"{e['msg']} (got {e.get('input')!r})")
        else:
            parts.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(parts)
