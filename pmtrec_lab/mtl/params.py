"""Typed hyper-parameters: every weighting method declares its own as a ``MethodParams`` class.

A method's parameter class sits beside its code and is the one owner of its defaults, bounds and
meaning (one docstring per field). Values are checked strictly: a bool is not a number, a string
is not a float, ``2.7`` is not an int, and NaN/inf are refused unless a field says otherwise.
The same class validates ``method.params`` when a configuration loads (before any data is read or
file written), builds the method, and lists the method's parameters in the documentation tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pmtrec_lab.errors import ConfigError, format_validation_errors

__all__ = ["MAIN_TASK", "MethodParams", "MethodParamsError", "NoParams", "format_validation_error"]

#: The main task is task 0, everywhere: tasks are ordered main first by ``tasks.build_tasks``.
MAIN_TASK = 0


class MethodParamsError(ConfigError):
    """A method parameter is unknown, ill-typed or out of bounds; the message names the field.

    A ``ConfigError`` (hence a ``ValueError``): the CLI reports it as one line."""

    def __init__(self, method: str, message: str, fields: tuple[str, ...] = ()):
        self.method = method
        self.fields = fields
        super().__init__(message)


class MethodParams(BaseModel):
    """Base class of a method's parameters: strict, frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    #: parameters that a configuration may still spell the old way, and how they convert
    #: (see ``PMTRecParams``); empty for most methods.
    legacy_notes: ClassVar[tuple[str, ...]] = ()

    #: parameters added after runs were named, each with the value that behaves as the method did
    #: before it existed: a run at that value keeps its folder name (``compare.layout.run_key``
    #: leaves it out of the hash), so adding a parameter does not rename, and retrain, every
    #: finished run of a grid. Add a new parameter here when it is added to a method; a changed
    #: default is not neutral (its runs must rename). Checked by
    #: ``tests/test_committed_runs_resolve.py`` on every committed grid.
    name_neutral: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def build(cls, method: str, params: Mapping[str, Any], prefix: str = "method.params") -> MethodParams:
        """Validate ``params`` for ``method``; raise ``MethodParamsError`` naming each bad field."""
        if not isinstance(params, Mapping):
            raise MethodParamsError(method, f"{prefix}: expected a mapping, got {type(params).__name__}")
        try:
            return cls.model_validate(dict(params))
        except ValidationError as err:
            message, fields = format_validation_error(err, method, cls, prefix)
            raise MethodParamsError(method, message, fields) from None

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Field name -> its one-line description (for documentation tables)."""
        return {name: (f.description or "").strip() for name, f in cls.model_fields.items()}

    def as_dict(self) -> dict[str, Any]:
        """Every parameter, with its value (JSON-ready)."""
        return self.model_dump(mode="json")


class NoParams(MethodParams):
    """A method without hyper-parameters."""


def format_validation_error(
    err: ValidationError, method: str, cls: type[MethodParams], prefix: str = "method.params"
) -> tuple[str, tuple[str, ...]]:
    """One message naming every failing ``prefix.field``, what was given and what is expected."""
    known = ", ".join(cls.model_fields) or "none"
    fields = tuple(".".join(str(x) for x in e["loc"]) for e in err.errors())
    message = format_validation_errors(
        err,
        prefix,
        unknown=lambda where: f"{where}: unknown parameter of method {method!r} (known: {known})",
        own_errors=False,
    )
    return f"method {method!r}: {message}", fields
