"""The one YAML reader of the package: configurations (``--config``), grids (``--grid``), report
parameters (``--params``), search spaces, a folder's ``pmtrec.yaml``, a tuning unit's
``best.yaml`` and ``--set`` values all go through it.

Why one reader: PyYAML's own message spans 6-7 lines, names the input ``"<unicode string>"``
and shows a caret diagram; every failure a user can meet ends in one line naming the file
(``pmtrec_lab.cli.main``). Here a syntax error becomes one ``ConfigError`` line with the file,
line and column: ``config file run.yaml, line 3, column 9: not valid YAML: expected ',' or ']',
but got ':' (while parsing a flow sequence from line 2)``. Line and column count from 1, as
editors do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pmtrec_lab.errors import ConfigError

__all__ = ["describe_yaml_error", "load_yaml_text", "read_yaml_file"]


def describe_yaml_error(exc: yaml.YAMLError) -> tuple[str, str]:
    """``(", line L, column C", problem)`` of a PyYAML error, both one line: where the parser
    stopped (empty when PyYAML gives no position) and what it expected there, with the line of
    the construct it was inside when that is another line (an unclosed ``[`` two lines up)."""
    mark = getattr(exc, "problem_mark", None)
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    lines = str(exc).strip().splitlines()
    problem = getattr(exc, "problem", None) or (lines[0] if lines else type(exc).__name__)
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and cmark is not None and (mark is None or cmark.line != mark.line):
        problem += f" ({context} from line {cmark.line + 1})"
    return at, " ".join(problem.split())


def load_yaml_text(text: str, where: str) -> Any:
    """The YAML document in ``text``; a one-line ``ConfigError`` starting with ``where`` (the
    file or setting it came from) when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        at, problem = describe_yaml_error(exc)
        raise ConfigError(f"{where}{at}: not valid YAML: {problem}") from None


def read_yaml_file(path: str | Path, what: str = "") -> Any:
    """The YAML document of the file ``path`` (None when it is empty).

    ``what`` says which kind of file it is (``"config file"``, ``"grid file"``, ...; "" when
    the file's name says it). Every problem is one ``ConfigError`` line starting with
    ``"<what> <path>"``: not found, a directory, not UTF-8 text, unreadable (permissions), or
    not valid YAML (with line and column)."""
    path = Path(path)
    where = f"{what} {path}".strip()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory; expected a YAML file") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{where}, line {line}: not UTF-8 text; expected YAML") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    return load_yaml_text(text, where)
