"""A two-node Ray cluster on this machine for the tests, in loopback mode
(``pmtrec_lab.ray_connect.node_command``): the head a ``ray start --block --head`` process, the
second node a ``python -m pmtrec_lab.ray_connect join`` process (``ray start --address`` refuses
to add a node in loopback mode), both with explicit ports, every server on 127.0.0.1, no
dashboard, no usage reporting, each node with its own temporary, cache and home folders (so no
filesystem is shared by accident) and token authentication with a token given in the
environment (nothing written to ``~/.ray``).

``RayCluster.stop()`` ends every process the two commands started, found by process id (the
commands' process groups and their recorded descendants), never by name.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pmtrec_lab.ray_connect import LOOPBACK, LOOPBACK_ENV, NODE_PORTS, node_command

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((LOOPBACK, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class RayCluster:
    root: Path
    cpus_per_node: int = 1
    object_store_bytes: int = 100 * 1024 * 1024
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    address: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        """What the driver (this test process) needs to join: the token, usage stats off, loopback
        mode (``ray_connect.connect`` sets it too, for a loopback address)."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            **LOOPBACK_ENV,
        }

    def _node_env(self, node: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        for sub in ("tmp", "cache", "home"):
            (node / sub).mkdir(parents=True, exist_ok=True)
        env.update(self.env())
        env.update(
            {
                "TMPDIR": str(node / "tmp"),
                "PMTREC_CACHE_DIR": str(node / "cache"),
                "HOME": str(node / "home"),
                "PYTHONPATH": str(REPO),
                "DGLBACKEND": "pytorch",
                "OMP_NUM_THREADS": "1",
            }
        )
        return env

    def _start(self, name: str, head: bool) -> None:
        node = self.root / name
        node.mkdir(parents=True, exist_ok=True)
        ports = free_ports(len(NODE_PORTS) + 6)
        common = {
            "temp_dir": node / "ray",
            "ports": dict(zip(NODE_PORTS, ports, strict=False)),
            "worker_ports": ports[len(NODE_PORTS) : len(NODE_PORTS) + 5],
            "num_cpus": self.cpus_per_node,
            "object_store_memory": self.object_store_bytes,
        }
        if head:
            (gcs,) = free_ports(1)  # no Ray Client server: ray[client] is not installed
            self.address = f"{LOOPBACK}:{gcs}"
            args, env = node_command(head_port=gcs, autoscaler_metrics_port=ports[-1], **common)
        else:
            args, env = node_command(address=self.address, **common)
        log = open(node / "start.log", "w")  # noqa: SIM115 (kept open for the process's life)
        proc = subprocess.Popen(
            args,
            env={**self._node_env(node), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = (node / "start.log").read_text()
            if "Ray runtime started" in text:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({name}) exited {proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.5)
        text = (node / "start.log").read_text()
        raise RuntimeError(f"ray start ({name}) did not start in 120 s:\n{text[-3000:]}")

    def start(self) -> RayCluster:
        self._start("head", head=True)
        self._start("worker", head=False)
        self._wait_for_nodes(2)
        return self

    def _wait_for_nodes(self, n: int) -> None:
        env = {**os.environ, **self.env(), "PYTHONPATH": str(REPO)}
        code = (
            "import ray, time, sys\n"
            f"ray.init(address={self.address!r}, _node_ip_address={LOOPBACK!r}, log_to_driver=False)\n"
            "alive = lambda: sum(x['Alive'] for x in ray.nodes())\n"
            "t = time.monotonic()\n"
            f"while alive() < {n} and time.monotonic() - t < 90: time.sleep(0.5)\n"
            f"sys.exit(0 if alive() >= {n} else 1)\n"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=150)

    def processes(self) -> list[psutil.Process]:
        """Every live process of the cluster: the two commands and their descendants."""
        found = []
        for p in self.procs:
            try:
                root = psutil.Process(p.pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        self.seen |= {q.pid for q in found}
        return found

    def stop(self) -> list[int]:
        """End every process of the cluster; returns the ids of any still alive (should be none)."""
        self.processes()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the command's own process group
            except (ProcessLookupError, PermissionError):
                pass
        alive = []
        for pid in sorted(self.seen):
            try:
                q = psutil.Process(pid)
                if q.status() != psutil.STATUS_ZOMBIE:
                    q.kill()
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        gone, left = psutil.wait_procs([psutil.Process(pid) for pid in alive if psutil.pid_exists(pid)], 10)
        return [q.pid for q in left]


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int, str]]:
    """(pid, address, port, kind) of every listening TCP socket and bound UDP socket of ``pids``."""
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.pid not in pids or not c.laddr:
            continue
        if c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN:
            out.append((c.pid, c.laddr.ip, c.laddr.port, "tcp"))
        elif c.type == socket.SOCK_DGRAM and not c.raddr:
            out.append((c.pid, c.laddr.ip, c.laddr.port, "udp"))
    return out


def is_loopback_ip(ip: str) -> bool:
    """True for a loopback address, also in IPv4-mapped form: Ray's gRPC servers bound to 127.0.0.1
    show as ``::ffff:127.0.0.1`` (an IPv6 socket that accepts only IPv4 connections to 127.0.0.1),
    which ``ipaddress`` (Python 3.11) does not call loopback."""
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback
