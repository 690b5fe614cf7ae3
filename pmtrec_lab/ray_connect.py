"""Moved to ``pmtrec_lab.execution.ray_connect`` (run execution is its own layer); this path
re-exports it, and ``python -m pmtrec_lab.ray_connect join ...`` still starts a loopback node."""

import sys

from pmtrec_lab.execution.ray_connect import (
    LOOPBACK,
    LOOPBACK_ENV,
    NODE_PORTS,
    _join,
    connect,
    disconnect,
    init_kwargs,
    is_loopback_address,
    node_command,
)

__all__ = [
    "LOOPBACK",
    "LOOPBACK_ENV",
    "NODE_PORTS",
    "connect",
    "disconnect",
    "init_kwargs",
    "is_loopback_address",
    "node_command",
]

if __name__ == "__main__":
    if sys.argv[1:2] != ["join"]:
        sys.exit("usage: python -m pmtrec_lab.ray_connect join --address=127.0.0.1:PORT [options]")
    sys.exit(_join(sys.argv[2:]))
