"""Report parameters checked against what each notebook declares, before anything runs.

papermill writes the parameters it is given into an injected cell as Python source, one
``name = value`` line each. A name that is not a plain identifier (``open('x','w')#``) or a
value it renders as raw source (YAML ``!!binary`` bytes) therefore runs as code in the kernel,
and a misspelt name (``epoch=2``) is injected as an unused variable while the notebook trains
its default. So a report accepts only the names a notebook declares in its ``parameters`` cell
(read with ``papermill.inspect_notebook``, which parses the cell without a kernel) and values of
the declared default's type:

==========================  ==============================================================
declared default            accepted values
==========================  ==============================================================
``bool``                    ``true`` / ``false`` only (not 0, 1 or strings)
``int``                     integers (not booleans, not 2.7: no silent truncation)
``float``                   integers or floats (not booleans)
``str`` / ``list`` / dict   the same container type
``None``                    any plain YAML value: None, bool, number, string, list, mapping
==========================  ==============================================================

A parameter whose comment mentions ``None`` (``gmb_method = 'pmtrec-gmb'  # ...; None: use
`method```) also takes None. Inside lists and mappings only plain values are allowed (no bytes,
dates or other YAML tags) and mapping keys must be strings. A common parameter must be declared
by at least one selected notebook; it is checked against each notebook that declares it.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmtrec_lab.errors import ConfigError

__all__ = [
    "NotebookParameter",
    "check_output_folder",
    "check_parameter_names",
    "check_report_params",
    "declared_parameters",
]

_PLAIN_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class NotebookParameter:
    """One ``name = default  # help`` line of a notebook's ``parameters`` cell."""

    name: str
    default: Any
    help: str

    @property
    def accepts_none(self) -> bool:
        return self.default is None or "None" in self.help

    def expected(self) -> str:
        """The accepted type(s), in words, for error messages."""
        if self.default is None:
            return "a plain value"
        kind = {bool: "a boolean (true/false)", int: "an integer", float: "a number"}.get(
            type(self.default), f"a {type(self.default).__name__}"
        )
        return f"{kind} or null" if self.accepts_none else kind

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the declared default's type (see the module docstring)."""
        if value is None:
            return self.accepts_none
        default = self.default
        if default is None:
            return True
        if isinstance(default, bool) or isinstance(value, bool):
            return isinstance(default, bool) and isinstance(value, bool)
        if isinstance(default, float):
            return isinstance(value, int | float)
        return type(value) is type(default)


def declared_parameters(notebook: str | os.PathLike) -> dict[str, NotebookParameter]:
    """The parameters declared in ``notebook``'s ``parameters`` cell, in the cell's order.

    Raises ConfigError naming the notebook when it cannot be read, has no ``parameters`` cell,
    or declares a default that is not a Python literal (its type could not be checked).
    """
    import papermill

    path = Path(notebook)
    try:
        inspected = papermill.inspect_notebook(str(path))
    except Exception as exc:  # papermill raises bare exceptions for unreadable notebooks
        raise ConfigError(f"notebook {path}: cannot read its parameters ({exc})") from None
    if not inspected:
        raise ConfigError(f"notebook {path}: no 'parameters' cell, so it accepts no parameters")
    declared: dict[str, NotebookParameter] = {}
    for name, info in inspected.items():
        try:
            default = ast.literal_eval(str(info["default"]))
        except (ValueError, SyntaxError):
            raise ConfigError(
                f"notebook {path}: parameter {name!r} has a default that is not a literal "
                f"({info['default']!r}); its type cannot be checked"
            ) from None
        declared[name] = NotebookParameter(name=name, default=default, help=str(info.get("help") or ""))
    return declared


def check_parameter_names(names: Iterable[Any], where: str) -> None:
    """Raise ConfigError unless every name is a plain Python identifier (papermill pastes it)."""
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigError(f"{where}: parameter name {name!r} is not a Python identifier")


def _plain_value_problem(value: Any) -> str | None:
    """Why ``value`` is not plain YAML data (None when it is)."""
    if isinstance(value, _PLAIN_SCALARS):
        return None
    if isinstance(value, list | tuple):
        for item in value:
            problem = _plain_value_problem(item)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"mapping keys must be strings, got key {key!r} ({type(key).__name__})"
            problem = _plain_value_problem(item)
            if problem:
                return problem
        return None
    return f"got {type(value).__name__} {value!r}, which is not plain data (string, number, list, ...)"


def _check_value(notebook: str, param: NotebookParameter, value: Any) -> None:
    problem = _plain_value_problem(value)
    if problem is None and not param.accepts(value):
        problem = f"got {type(value).__name__} {value!r}"
    if problem:
        raise ConfigError(
            f"{notebook}: parameter {param.name!r} takes {param.expected()} "
            f"(default {param.default!r}); {problem}"
        )


def _unknown(name: Any, subject: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{subject} {name!r}{hint}; known parameters: {', '.join(known)}")


def check_report_params(
    notebooks: Sequence[str | os.PathLike],
    common: Mapping[str, Any],
    per_notebook: Mapping[str, Mapping[str, Any]],
) -> None:
    """Raise ConfigError (one line) unless every parameter is declared and of the declared type.

    ``notebooks`` are the notebook files of the report, ``common`` goes to all of them and
    ``per_notebook`` maps a notebook's file stem to its own parameters.
    """
    declared = {Path(nb).stem: declared_parameters(nb) for nb in notebooks}
    for stem, values in per_notebook.items():
        known = declared.get(stem)
        if known is None:
            raise ConfigError(f"parameters given for {stem!r}, which is not in the report")
        for name, value in values.items():
            if name not in known:
                raise _unknown(name, f"{stem} declares no parameter", list(known))
            _check_value(stem, known[name], value)
    union = list(dict.fromkeys(n for params in declared.values() for n in params))
    for name, value in common.items():
        owners = [stem for stem, params in declared.items() if name in params]
        if not owners:
            subject = f"no selected notebook ({', '.join(declared)}) declares the parameter"
            raise _unknown(name, subject, union)
        for stem in owners:
            _check_value(stem, declared[stem][name], value)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output_folder(out: str | os.PathLike, files: Iterable[str], label: str) -> None:
    """Raise ConfigError unless ``out`` can be created (if missing) and ``files`` written in it.

    Checked from the file system without writing anything (no probe files), so a refused report
    leaves the tree as it was. ``label`` names the setting in the message (``--out``).
    """
    out = Path(os.path.abspath(out))

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"{label} {out}: {reason}; choose another folder")

    if out.exists():
        if not out.is_dir():
            raise refuse("is a file, not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise refuse("is not writable")
        for name in files:
            if (out / name).is_dir():
                raise refuse(f"{name} there is a folder, where the report writes a file")
        return
    missing = [out]
    while not missing[-1].parent.exists():
        missing.append(missing[-1].parent)
    anchor = missing[-1].parent
    if not anchor.is_dir():
        raise refuse(f"cannot be created, since {anchor} is a file")
    limit = _name_max(anchor)
    for folder in missing:
        if len(os.fsencode(folder.name)) > limit:
            raise refuse(f"the name {folder.name[:20]}... is longer than the file system's {limit} bytes")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise refuse(f"cannot be created, since {anchor} is not writable")
