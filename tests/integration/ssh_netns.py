"""Real sshd servers and network-namespace devices for the integration tier and the benchmarks:
plain helpers, no pytest (the fixtures in conftest.py wrap them)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.arm64_device import DeviceRoot

SSHD = Path("/usr/sbin/sshd")
_subnets = itertools.count(1)


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _wait_for_port(address: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {address}:{port}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SshServer:
    """One sshd; ``alias`` is its Host entry in the client's ssh_config."""

    alias: str
    address: str
    port: int
    directory: Path
    netns: str | None = None
    chroot: DeviceRoot | None = None
    """The device's own root filesystem (another architecture's) that sshd runs in."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def host_key(self) -> Path:
        return self.directory / "host_ed25519"

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    def seen_by_sshd(self, path: Path) -> str:
        return self.chroot.inside(path) if self.chroot else str(path)

    def start(self) -> None:
        sshd = [str(SSHD), "-D", "-e", "-f", self.seen_by_sshd(self.directory / "sshd_config")]
        command = self.chroot.command(sshd) if self.chroot else sshd
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*prefix, *command], stdout=log, stderr=log, start_new_session=True
            )
        _wait_for_port(self.address, self.port, self.process, self.log)

    def stop(self) -> None:
        """Kill the listener and every session it spawned (its whole process group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def new_host_key(self) -> None:
        """What a reinstalled device looks like: same address, different host key."""
        self.host_key.unlink()
        self.host_key.with_suffix(".pub").unlink()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key))

    def reinstall(self) -> None:
        """Stopped, given a new host key, started again."""
        self.stop()
        self.new_host_key()
        self.start()


@dataclass
class SshClientSide:
    directory: Path
    key: Path
    known_hosts: Path
    config: Path
    servers: list[SshServer] = field(default_factory=list)

    def add_alias(self, server: SshServer, **extra: str) -> None:
        lines = [
            f"Host {server.alias}",
            f"  HostName {server.address}",
            f"  Port {server.port}",
            "  User root",
            f"  IdentityFile {self.key}",
            f"  UserKnownHostsFile {self.known_hosts}",
            *(f"  {key} {value}" for key, value in extra.items()),
        ]
        with self.config.open("a", encoding="utf-8") as config:
            config.write("\n".join(lines) + "\n")


def missing_sshd() -> str | None:
    """Why real sshd servers cannot be started here, or None when they can."""
    if not SSHD.is_file():
        return f"{SSHD} is missing (scripts/test installs openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing"
    if os.geteuid() != 0:
        return "sshd for tests must run as root (it switches users)"
    return None


def make_client_side(directory: Path) -> SshClientSide:
    """A client key, known_hosts and ssh_config of its own (set EDGEPACK_SSH_CONFIG to it)."""
    directory.mkdir(parents=True)
    key = directory / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    config = directory / "ssh_config"
    config.write_text("")
    return SshClientSide(directory, key, directory / "known_hosts", config)


def _sshd_config(server: SshServer, extra: tuple[str, ...] = ()) -> str:
    inside = server.seen_by_sshd
    return "\n".join(
        [
            *extra,
            f"ListenAddress {server.address}:{server.port}",
            f"HostKey {inside(server.host_key)}",
            f"PidFile {inside(server.directory / 'sshd.pid')}",
            f"AuthorizedKeysFile {inside(server.directory / 'authorized_keys')}",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            # A session whose client vanished (link cut) ends within seconds.
            "ClientAliveInterval 2",
            "ClientAliveCountMax 2",
            "LogLevel VERBOSE",
            *extra,
        ]
    )


def start_sshd(
    client: SshClientSide,
    directory: Path,
    alias: str,
    address: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    chroot: DeviceRoot | None = None,
    extra_config: tuple[str, ...] = (),
) -> SshServer:
    """Start an sshd (inside ``netns`` and ``chroot`` if given) that accepts ``client``'s key as
    root. In a ``chroot``, ``directory`` must lie inside the device's root filesystem.
    ``extra_config``: more sshd_config lines (``SetEnv`` for a stand-in host's programs)."""
    system_root = chroot.path if chroot else Path("/")
    # sshd's privilege separation directory
    (system_root / "run" / "sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    directory.mkdir(parents=True)
    server = SshServer(alias, address, port or free_port(), directory, netns, chroot)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(server.host_key))
    shutil.copy(client.key.with_suffix(".pub"), directory / "authorized_keys")
    (directory / "sshd_config").write_text(_sshd_config(server, extra_config) + "\n")
    server.start()
    client.add_alias(server)
    return server


@dataclass
class NetnsDevice:
    """A network namespace joined to this host by a veth pair."""

    name: str
    host_if: str
    host_address: str
    device_address: str
    table: str

    def limit_rate(self, rate: str) -> None:
        """tbf on the host end: shapes what this host sends (uploads) to the device."""
        run(
            "tc",
            "qdisc",
            "replace",
            "dev",
            self.host_if,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "32kbit",
            "latency",
            "400ms",
        )

    def cut(self) -> None:
        """Drop every packet to and from the device, like WiFi going away."""
        run("nft", "add", "table", "inet", self.table)
        run(
            "nft",
            "add",
            "chain",
            "inet",
            self.table,
            "out",
            "{ type filter hook output priority 0; policy accept; }",
        )
        run(
            "nft",
            "add",
            "rule",
            "inet",
            self.table,
            "out",
            "ip",
            "daddr",
            self.device_address,
            "drop",
        )
        run(
            "nft",
            "add",
            "chain",
            "inet",
            self.table,
            "in",
            "{ type filter hook input priority 0; policy accept; }",
        )
        run(
            "nft",
            "add",
            "rule",
            "inet",
            self.table,
            "in",
            "ip",
            "saddr",
            self.device_address,
            "drop",
        )

    def power_off(self) -> None:
        """Every process of the device dies at once (its sshd sessions included)."""
        for pid in run("ip", "netns", "pids", self.name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def heal(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)

    def sent_bytes(self) -> int:
        """Bytes this host has sent to the device over the veth (headers included)."""
        return int(Path(f"/sys/class/net/{self.host_if}/statistics/tx_bytes").read_text())

    def received_bytes(self) -> int:
        return int(Path(f"/sys/class/net/{self.host_if}/statistics/rx_bytes").read_text())

    def destroy(self) -> None:
        self.heal()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def missing_netns() -> str | None:
    """Why namespace devices cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is missing"
    return None


def make_netns_device() -> NetnsDevice:
    """A new namespace with a veth pair to this host (one /30 per device: 10.231.x.0)."""
    index = (os.getpid() * 7 + next(_subnets)) % 250 + 1
    name = f"ep{os.getpid() % 100000}x{index}"
    subnet = f"10.231.{index}"
    device = NetnsDevice(name, f"{name}h", f"{subnet}.1", f"{subnet}.2", f"{name}t")
    run("ip", "netns", "add", name)
    try:
        run("ip", "link", "add", device.host_if, "type", "veth", "peer", "name", f"{name}d")
        run("ip", "link", "set", f"{name}d", "netns", name)
        run("ip", "addr", "add", f"{device.host_address}/30", "dev", device.host_if)
        run("ip", "link", "set", device.host_if, "up")
        inside = ("ip", "netns", "exec", name, "ip")
        run(*inside, "addr", "add", f"{device.device_address}/30", "dev", f"{name}d")
        run(*inside, "link", "set", f"{name}d", "up")
        run(*inside, "link", "set", "lo", "up")
    except BaseException:
        device.destroy()
        raise
    return device
