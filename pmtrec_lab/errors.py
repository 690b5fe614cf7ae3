"""Errors that name the file, line, field or parameter at fault and what was expected."""

from __future__ import annotations

from pathlib import Path


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
