"""Connecting to Ray (imported only by the Ray commands: ``import pmtrec_lab`` never imports ray).

``connect(address)`` joins the cluster at ``address`` (``ray start --head`` printed it), or,
without one, starts a local Ray instance sized to the machine (the embedded default). Either
way the dashboard and usage reporting are off.

**Loopback.** A local instance, and a driver joining a cluster at a loopback address, run in
*loopback mode*: every server of every Ray process (GCS server, raylet, object manager, core
workers and drivers, runtime-env agent, dashboard agent, autoscaler metrics) listens on
127.0.0.1 only. What it takes with ray 2.60.0 (read in its source, measured with
``tests/test_ray_cluster.py``):

* Ray chooses every bind address from one *node IP*: the C++ gRPC servers (GCS, raylet, object
  manager, core workers) bind 127.0.0.1 when the node IP is a localhost address and all
  interfaces (``::``) otherwise, the runtime-env agent binds the node IP, and the autoscaler
  monitor's metrics server (``autoscaler/_private/monitor.py``) binds 127.0.0.1 when the node IP
  is localhost and 0.0.0.0 otherwise.
* ``ray.init(_node_ip_address="127.0.0.1")`` and ``ray start --node-ip-address=127.0.0.1`` alone
  do not give that node IP: both pass it through ``services.resolve_ip_for_localhost``, which
  replaces a localhost address with ``services.get_node_ip_address()``, the routable address
  (``node_ip_address_from_perspective``), and so does the bootstrap address of ``ray.init(address=
  "127.0.0.1:PORT")`` / ``ray start --address`` (``services.canonicalize_bootstrap_address``).
  ``get_node_ip_address`` keeps the loopback address only when
  ``ray_constants.ENABLE_RAY_CLUSTER`` is false, which Ray reads from the environment variable
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when ``ray`` is imported (true by default on Linux;
  false is Ray's own single-machine mode on macOS and Windows). ``LOOPBACK_ENV`` sets it to 0:
  ``connect`` puts it in this process's environment before importing ray (Ray's processes
  inherit it) and ``node_command`` in each node's environment.
* In that mode the ``ray start --address`` command refuses to add a node
  (``scripts.py``: "Multi-node Ray clusters are not supported on Windows and OSX"), although
  Ray itself runs several nodes on one machine in it (``ray.cluster_utils.Cluster`` does).
  ``node_command`` therefore starts a head node with ``ray start --head`` and any further node
  on this machine with ``python -m pmtrec_lab.execution.ray_connect join``, which does what ``ray start
  --block --address`` does for a node (``ray._private.node.Node`` with ``head=False``, kept in
  the foreground; SIGTERM stops the node's processes) without that check.

**Files.** Ray's token authentication writes a token to ``~/.ray/auth_token`` when it starts a
local instance, and every start leaves a session folder under ``/tmp/ray``. ``connect`` keeps
the token under the project's cache folder instead (``ray_token_env``: ``RAY_AUTH_TOKEN_PATH`` at
``<cache>/ray/auth_token``, created once with mode 0600, unless ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH`` is already set), starts a local instance in a temporary folder of its own
and removes that folder when ``disconnect`` stops the instance. A cluster's nodes keep the
temporary folders their ``ray start`` gave them.

A cluster on other machines cannot run in loopback mode (its nodes must reach each other): a
driver joining it at a non-loopback address leaves ``ENABLE_RAY_CLUSTER`` as it is and Ray
picks the address by which this machine reaches the head, unless ``node_ip_address`` says
otherwise; its servers then listen as Ray decides (all interfaces for the gRPC servers).

What a cluster needs: pmtrec-lab and its pinned requirements on every node (the same
``requirements.txt``), and the datasets on every node (``PMTREC_DATA_DIR``) or ``--data-dir`` on
a path that every node sees. Nothing else is shared: run artefacts come back to the driver.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "LOOPBACK",
    "LOOPBACK_ENV",
    "connect",
    "disconnect",
    "init_kwargs",
    "is_loopback_address",
    "node_command",
    "ray_token_env",
]

LOOPBACK = "127.0.0.1"

#: the environment that keeps Ray's node IP, and so every server it starts, on 127.0.0.1
#: (``services.get_node_ip_address`` returns ``get_localhost_ip()`` when
#: ``ray_constants.ENABLE_RAY_CLUSTER`` is false); read by Ray when ``ray`` is imported
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

#: the ports a node's servers take (``node_command``): each given explicitly, so that two nodes
#: on one machine, or another Ray on it, never meet on a default port
NODE_PORTS = (
    "node_manager",
    "object_manager",
    "dashboard_agent_listen",
    "dashboard_agent_grpc",
    "runtime_env_agent",
    "metrics_export",
)


def is_loopback_address(address: str) -> bool:
    """True when ``host:port`` (or ``ray://host:port``) names this machine's loopback interface."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _use_loopback() -> None:
    """Loopback mode for this process and the Ray processes it starts (``LOOPBACK_ENV``).

    Ray reads the variable once, when ``ray._private.ray_constants`` is imported; if ray is
    already loaded (a test process, a notebook), its constant is set to the same value."""
    os.environ.update(LOOPBACK_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def init_kwargs(
    address: str | None = None,
    node_ip_address: str | None = None,
    object_store_memory: int | None = None,
    num_cpus: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """The ``ray.init`` keyword arguments for ``connect``, and whether it runs in loopback mode.

    Loopback mode: no ``address``, or a loopback one, and no ``node_ip_address`` other than a
    loopback address; the node IP is then 127.0.0.1."""
    if node_ip_address is None and (address is None or is_loopback_address(address)):
        node_ip_address = LOOPBACK
    loopback = node_ip_address is not None and is_loopback_address(f"{node_ip_address}:0")
    loopback = loopback and (address is None or is_loopback_address(address))
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
    return kwargs, loopback


#: the temporary folder of the local instance this process started (removed by ``disconnect``)
_LOCAL_TEMP: Path | None = None


def ray_token_env() -> dict[str, str]:
    """What Ray needs to find its authentication token outside the home folder: ``{}`` when the
    environment already names one (``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``), otherwise
    ``RAY_AUTH_TOKEN_PATH`` at ``<cache>/ray/auth_token``, created now (random, mode 0600) if
    missing. Ray would otherwise generate ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return {}
    from pmtrec_lab.paths import cache_dir

    path = cache_dir() / "ray" / "auth_token"
    if not path.is_file() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return {"RAY_AUTH_TOKEN_PATH": str(path)}


def connect(
    address: str | None = None,
    node_ip_address: str | None = None,
    object_store_memory: int | None = None,
    num_cpus: int | None = None,
) -> Any:
    """Join or start Ray once per process; returns the ``ray`` module.

    ``object_store_memory`` (bytes) and ``num_cpus`` size only a local instance (``address``
    None); a cluster has the sizes its ``ray start`` commands gave. A local instance, or a
    cluster at a loopback address, runs in loopback mode (the module's docstring)."""
    global _LOCAL_TEMP
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs, loopback = init_kwargs(address, node_ip_address, object_store_memory, num_cpus)
    if loopback:
        _use_loopback()
    import ray

    if ray.is_initialized():
        return ray
    os.environ.update(ray_token_env())
    if address is None:  # a local instance: its session folders in a folder of its own
        _LOCAL_TEMP = Path(tempfile.mkdtemp(prefix="pmtrec-"))  # short: Ray's socket paths
        kwargs["_temp_dir"] = str(_LOCAL_TEMP)
    try:
        ray.init(**kwargs)
    except BaseException:
        _remove_local_temp()
        raise
    return ray


def _remove_local_temp() -> None:
    global _LOCAL_TEMP
    if _LOCAL_TEMP is not None:
        shutil.rmtree(_LOCAL_TEMP, ignore_errors=True)
        _LOCAL_TEMP = None


def disconnect() -> None:
    """Leave Ray (stops a local instance this process started, and removes its temporary folder); a
    no-op when Ray is not loaded."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    _remove_local_temp()


def node_command(
    *,
    temp_dir: str | Path,
    ports: dict[str, int],
    worker_ports: list[int],
    head_port: int | None = None,
    address: str | None = None,
    autoscaler_metrics_port: int | None = None,
    num_cpus: int = 1,
    object_store_memory: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command and the environment (to add to the caller's) that start one Ray node on this
    machine in loopback mode, in the foreground (it runs until SIGTERM), every server on 127.0.0.1.

    ``head_port`` given: the head node (``ray start --head --port=head_port``, no dashboard, no
    usage reporting; its address is ``127.0.0.1:head_port``). Otherwise ``address`` (the head's)
    and a further node joins it through ``python -m pmtrec_lab.execution.ray_connect join``, since ``ray
    start --address`` refuses to in loopback mode (the module's docstring). ``ports`` gives every
    port of ``NODE_PORTS``; ``worker_ports`` the ports the node's workers listen on;
    ``autoscaler_metrics_port`` (head only) the autoscaler monitor's metrics server (Ray's
    default is 44217 for every head on the machine). GPUs: none."""
    if (head_port is None) == (address is None):
        raise ValueError("give head_port (a head node) or address (a node joining it), not both")
    if address is not None and not is_loopback_address(address):
        raise ValueError(f"a loopback node joins a head on loopback, not {address!r}")
    missing = [k for k in NODE_PORTS if k not in ports]
    if missing:
        raise ValueError(f"node_command: no port for {', '.join(missing)}")
    flags = [
        f"--node-ip-address={LOOPBACK}", f"--num-cpus={num_cpus}", "--num-gpus=0",
        f"--temp-dir={temp_dir}",
        *(f"--{k.replace('_', '-')}-port={ports[k]}" for k in NODE_PORTS),
        f"--worker-port-list={','.join(map(str, worker_ports))}",
    ]  # fmt: skip
    if object_store_memory is not None:
        flags.append(f"--object-store-memory={object_store_memory}")
    env = {**LOOPBACK_ENV, "RAY_USAGE_STATS_ENABLED": "0"}
    if head_port is not None:
        ray = Path(sys.executable).parent / "ray"
        argv = [str(ray), "start", "--block", "--head", f"--port={head_port}", *flags]
        argv += ["--include-dashboard=false", "--disable-usage-stats"]
        if autoscaler_metrics_port is not None:
            env["AUTOSCALER_METRIC_PORT"] = str(autoscaler_metrics_port)
    else:
        module = "pmtrec_lab.execution.ray_connect"
        argv = [sys.executable, "-m", module, "join", f"--address={address}", *flags]
    return argv, env


def _join(argv: list[str]) -> int:
    """``python -m pmtrec_lab.execution.ray_connect join --address=HEAD ...``: a node of the loopback cluster
    at ``HEAD`` (127.0.0.1), what ``ray start --block --address=HEAD`` does for a node, in loopback
    mode. Prints "Ray runtime started." once the node's processes are up; exits 1 (the node's
    processes killed) if one of them dies unexpectedly, and on SIGTERM stops them (Ray's handler)."""
    p = argparse.ArgumentParser(prog="python -m pmtrec_lab.execution.ray_connect join")
    p.add_argument("--address", required=True)
    p.add_argument("--node-ip-address", default=LOOPBACK)
    p.add_argument("--num-cpus", type=int, default=1)
    p.add_argument("--num-gpus", type=int, default=0)
    p.add_argument("--object-store-memory", type=int)
    p.add_argument("--temp-dir")
    for k in NODE_PORTS:
        p.add_argument(f"--{k.replace('_', '-')}-port", type=int)
    p.add_argument("--worker-port-list")
    a = p.parse_args(argv)
    if not (is_loopback_address(a.address) and is_loopback_address(f"{a.node_ip_address}:0")):
        p.error("join starts a node on loopback: --address and --node-ip-address must be loopback")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _use_loopback()
    import signal
    import time

    import ray._private.node
    import ray._private.parameter
    from ray._private import services
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled

    params = ray._private.parameter.RayParams(
        node_ip_address=a.node_ip_address,
        node_name=a.node_ip_address,
        gcs_address=services.canonicalize_bootstrap_address(a.address, temp_dir=a.temp_dir),
        num_cpus=a.num_cpus,
        num_gpus=a.num_gpus,
        object_store_memory=a.object_store_memory,
        temp_dir=a.temp_dir,
        node_manager_port=a.node_manager_port,
        object_manager_port=a.object_manager_port,
        dashboard_agent_listen_port=a.dashboard_agent_listen_port,
        metrics_agent_port=a.dashboard_agent_grpc_port,
        runtime_env_agent_port=a.runtime_env_agent_port,
        metrics_export_port=a.metrics_export_port,
        worker_port_list=a.worker_port_list,
    )
    ensure_token_if_auth_enabled(None, create_token_if_missing=False)
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"Ray runtime started. (node {node.node_id} at {a.node_ip_address}, head {a.address})", flush=True)
    graceful = {0, signal.SIGTERM, -signal.SIGTERM, 128 + signal.SIGTERM}
    while True:  # as 'ray start --block'
        time.sleep(1)
        dead = [(kind, proc) for kind, proc in node.dead_processes() if proc.returncode not in graceful]
        if dead:
            print(f"Ray processes exited unexpectedly: {[(k, p.returncode) for k, p in dead]}", flush=True)
            node.kill_all_processes(check_alive=False, allow_graceful=False)
            os._exit(1)


if __name__ == "__main__":
    if sys.argv[1:2] != ["join"]:
        sys.exit("usage: python -m pmtrec_lab.execution.ray_connect join --address=127.0.0.1:PORT [options]")
    sys.exit(_join(sys.argv[2:]))
