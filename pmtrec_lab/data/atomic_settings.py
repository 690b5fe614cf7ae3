"""What an atomic folder is read with: the fields, task declarations and default k-core of a
``data`` section (``config.DataConfig``) naming a folder dataset. Light (headers and
``pmtrec.yaml`` only): the dataset registry's check calls it when a configuration loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pmtrec_lab.config import AtomicFields, DataConfig
from pmtrec_lab.data.atomic_files import offered_tasks, read_sidecar, require_inter
from pmtrec_lab.data.sources.atomic_tasks import AtomicTask, check_atomic_tasks
from pmtrec_lab.errors import ConfigError, format_validation_errors

__all__ = ["AtomicSettings", "atomic_settings"]


@dataclass(frozen=True)
class AtomicSettings:
    """What an atomic folder is read with (``DataConfig.atomic_settings``); ``origin`` says where the
    task declarations came from (``data.tasks`` or the folder's ``pmtrec.yaml``; "" when none
    declares them and the tasks are those the files offer, each off)."""

    folder: Path
    fields: AtomicFields
    tasks: list[AtomicTask]
    k_core: int | None
    origin: str


def _validated(model: Any, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise ConfigError(f"{where}: {format_validation_errors(err)}") from None


def atomic_settings(data: DataConfig) -> AtomicSettings:
    """The folder's fields, tasks and default k-core: this configuration's, else the folder's
    ``pmtrec.yaml``'s, else RecBole's default fields and every task the files offer (off).

    ``MissingDataError`` when the folder or its ``<stem>.inter`` is missing; ``ConfigError``
    naming ``pmtrec.yaml`` and the key when that file is invalid."""
    folder = data.folder()
    require_inter(folder)
    sidecar, where = read_sidecar(folder)
    fields = data.fields
    if fields is None:
        fields = _validated(AtomicFields, sidecar.get("fields") or {}, f"{where}: fields")
    if data.tasks is not None:
        tasks, origin = list(data.tasks), "data.tasks"
    elif "tasks" in sidecar:
        declared = sidecar["tasks"] or []
        if not isinstance(declared, list):
            raise ConfigError(f"{where}: tasks must be a list of task declarations")
        tasks = [_validated(AtomicTask, t, f"{where}: tasks[{i}]") for i, t in enumerate(declared)]
        check_atomic_tasks(tasks, f"{where}: tasks")
        origin = str(where)
    else:
        offered = offered_tasks(folder, fields.user, fields.item)
        tasks = [_validated(AtomicTask, t, f"{folder}: offered task") for t in offered]
        origin = ""  # none declared: what the files offer
    k_core = sidecar.get("k_core")
    if k_core is not None and (type(k_core) is not int or k_core < 1):
        raise ConfigError(f"{where}: k_core must be a positive integer, got {k_core!r}")
    return AtomicSettings(folder=folder, fields=fields, tasks=tasks, k_core=k_core, origin=origin)
