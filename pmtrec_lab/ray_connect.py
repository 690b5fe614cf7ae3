"""Connecting to Ray (imported only by the Ray commands: ``import pmtrec_lab`` never imports ray).

``connect(address)`` joins the cluster at ``address`` (``ray start --head`` printed it), or,
without one, starts a local Ray instance sized to the machine (the embedded default). Either
way the dashboard and usage reporting are off, and the local instance binds every server to the
loopback address ``127.0.0.1`` (``_node_ip_address``): nothing listens on another interface.
A driver that joins a cluster at a loopback address binds there too (the cluster's nodes are on
this machine); for a cluster on other machines Ray picks the address by which this machine
reaches them, unless ``node_ip_address`` says otherwise.

What a cluster needs: pmtrec-lab and its pinned requirements on every node (the same
``requirements.txt``), and the datasets on every node (``PMTREC_DATA_DIR``) or ``--data-dir`` on
a path that every node sees. Nothing else is shared: run artefacts come back to the driver.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

__all__ = ["LOOPBACK", "connect", "disconnect", "is_loopback_address"]

LOOPBACK = "127.0.0.1"


def is_loopback_address(address: str) -> bool:
    """True when ``host:port`` (or ``ray://host:port``) names this machine's loopback interface."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(
    address: str | None = None,
    node_ip_address: str | None = None,
    object_store_memory: int | None = None,
    num_cpus: int | None = None,
) -> Any:
    """Join or start Ray once per process; returns the ``ray`` module.

    ``object_store_memory`` (bytes) and ``num_cpus`` size only a local instance (``address``
    None); a cluster has the sizes its ``ray start`` commands gave."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray
    if node_ip_address is None and (address is None or is_loopback_address(address)):
        node_ip_address = LOOPBACK
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if node_ip_address is not None:
        kwargs["_node_ip_address"] = node_ip_address
    if address is None:  # a cluster has the dashboard its 'ray start' gave (--include-dashboard=false)
        kwargs["include_dashboard"] = False
        if object_store_memory is not None:
            kwargs["object_store_memory"] = object_store_memory
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    return ray


def disconnect() -> None:
    """Leave Ray (stops a local instance this process started); a no-op when Ray is not loaded."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
