"""What one run (a Ray task, or a Ray Tune trial) asks of a node: ``--resources-per-run cpu=1,gpu=0.25``.

Ray places a task on a node with that much free: CPUs and GPUs may be fractional (four runs
share a GPU at ``gpu=0.25``); a request above one GPU must be a whole number (Ray's rule). The
run's torch threads follow its CPUs (at least one). Parsing is plain text, so the Ray commands'
arguments are checked before Ray is imported or started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pmtrec_lab.errors import ConfigError

__all__ = ["RunResources", "parse_resources"]

#: the resource names ``--resources-per-run`` knows
KNOWN = ("cpu", "gpu")


@dataclass(frozen=True)
class RunResources:
    """CPUs and GPUs one run reserves on its node (Ray's ``num_cpus`` / ``num_gpus``)."""

    cpu: float = 1.0
    gpu: float = 0.0

    @property
    def threads(self) -> int:
        """torch threads of a run with these CPUs: the whole CPUs, at least one."""
        return max(1, math.floor(self.cpu))

    def ray_options(self) -> dict[str, float]:
        return {"num_cpus": self.cpu, "num_gpus": self.gpu}

    def label(self) -> str:
        return f"cpu={self.cpu:g},gpu={self.gpu:g}"


def parse_resources(text: str | None, flag: str = "--resources-per-run") -> RunResources:
    """``"cpu=1,gpu=0.25"`` -> ``RunResources(1.0, 0.25)`` (omitted names keep their defaults:
    one CPU, no GPU); anything else is one ``ConfigError`` line naming ``flag`` and the item."""
    if text is None or not text.strip():
        return RunResources()
    values: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        name = name.strip().lower()
        where = f"{flag} {text!r}"
        if not sep or not name:
            raise ConfigError(f"{where}: {item.strip()!r} is not NAME=NUMBER; expected e.g. cpu=1,gpu=0.25")
        if name not in KNOWN:
            raise ConfigError(f"{where}: unknown resource {name!r}; expected {' and/or '.join(KNOWN)}")
        if name in values:
            raise ConfigError(f"{where}: {name} given more than once")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {name}={value.strip()!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"{where}: {name}={value.strip()} must be a finite number >= 0")
        values[name] = number
    res = RunResources(**values)
    if res.cpu == 0 and res.gpu == 0:
        raise ConfigError(f"{flag} {text!r}: a run must reserve some CPU or GPU (cpu=0 and gpu=0)")
    if res.gpu > 1 and not res.gpu.is_integer():
        raise ConfigError(
            f"{flag} {text!r}: gpu={res.gpu:g}: fractional GPUs must be below 1 (Ray shares a GPU "
            "between tasks, never splits one task over GPUs); use a whole number above 1"
        )
    return res
