"""What makes a connection ready early, on a real sshd: the device shell starts with the
connection, small requests are not held back (TCP_NODELAY), early connections nobody took are
closed."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from edgepack.remote.connect import EarlyConnections
from edgepack.remote.connector import shell
from edgepack.remote.hosts import parse_host
from edgepack.remote.ssh import SshConnector
from tests.integration.conftest import SshServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _started_s_ago(pid: int) -> float:
    """How long ago process ``pid`` of this machine (the loopback device) started."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(fields[19]) / CLOCK_TICKS


def test_the_device_shell_starts_with_the_connection(
    sshd_factory: Callable[..., SshServer],
) -> None:
    sshd_factory("dev")
    with SshConnector(parse_host("dev")) as device:
        time.sleep(1.0)
        parent = int(device.run(shell('echo "$PPID"')).stdout)
        # Started at connect, before this first command: its login shell's rc file has run.
        assert _started_s_ago(parent) > 0.8


def test_small_requests_go_out_at_once(sshd_factory: Callable[..., SshServer]) -> None:
    sshd_factory("dev")
    with SshConnector(parse_host("dev")) as device:
        transport = device._client.get_transport()
        assert transport is not None
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def _established_to(port: int) -> int:
    done = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return len(done.stdout.splitlines())


def test_early_connections_not_taken_are_closed(sshd_factory: Callable[..., SshServer]) -> None:
    server = sshd_factory("dev")
    spec = parse_host("dev")
    with EarlyConnections([spec]):
        deadline = time.monotonic() + 10
        while _established_to(server.port) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _established_to(server.port) == 1
    deadline = time.monotonic() + 10
    while _established_to(server.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _established_to(server.port) == 0
