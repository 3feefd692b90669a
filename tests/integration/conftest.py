"""Real OpenSSH servers for the integration tier: one on loopback, "devices" in network namespaces.

Each server gets its own host key, sshd_config and log in a temporary directory; the client side
gets its own key, known_hosts and ssh_config (pointed at by EDGEPACK_SSH_CONFIG), so nothing of the
user's ~/.ssh is read or written. Namespace devices are joined to this host by a veth pair whose
host end can be rate-limited (tc tbf) and cut (nftables drop). Everything is torn down afterwards.
A test that cannot get a component (not root, no sshd, no `ip netns`) is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import pytest

from edgepack.bundle import ID_EXCLUDED_FIELDS, Manifest, write_bundle
from edgepack.cache import FileHashIndex, content_key
from edgepack.remote.ssh import SSH_CONFIG_ENV
from tests.integration.arm64_device import (
    ARM64_BUILD_PACKAGES,
    ARM64_PACKAGES,
    DeviceRoot,
    aarch64_binfmt,
    unpack_device_root,
)
from tests.integration.container_fixtures import rootfs_tarball

SSHD = Path("/usr/sbin/sshd")
_subnets = itertools.count(1)


def require(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason)


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


@pytest.fixture
def ssh_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SshClientSide:
    missing = missing_sshd()
    require(missing is None, str(missing))
    client = make_client_side(tmp_path / "client")
    monkeypatch.setenv(SSH_CONFIG_ENV, str(client.config))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return client


@pytest.fixture
def sshd_factory(tmp_path: Path, ssh_client: SshClientSide) -> Iterator[Callable[..., SshServer]]:
    servers: list[SshServer] = []

    def start(
        alias: str,
        address: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
        chroot: DeviceRoot | None = None,
        extra_config: tuple[str, ...] = (),
    ) -> SshServer:
        parent = chroot.path / "etc" / "edgepack-test" if chroot else tmp_path
        directory = parent / f"sshd-{alias}"
        server = start_sshd(
            ssh_client, directory, alias, address, port, netns, chroot, extra_config
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


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


@pytest.fixture
def netns_factory() -> Iterator[Callable[[], NetnsDevice]]:
    missing = missing_netns()
    require(missing is None, str(missing))
    made: list[NetnsDevice] = []

    def make() -> NetnsDevice:
        try:
            device = make_netns_device()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
        made.append(device)
        return device

    yield make
    for device in made:
        device.destroy()


@contextlib.contextmanager
def mounted_tmpfs(at: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``at`` (size limit, read-only...) for the test's duration."""
    at.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(at)])
    require(mounted.returncode == 0, "cannot mount a tmpfs (needs root and mount rights)")
    try:
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)])


def nft_available() -> bool:
    return shutil.which("nft") is not None


def make_bundle(
    directory: Path, files: dict[str, bytes], *, target: dict[str, object] | None = None
) -> Path:
    """A real bundle (sealed manifest) with the given engine files; no model needed."""
    source = directory.parent / f"{directory.name}-engine-src"
    for name, content in files.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    prompts = directory.parent / f"{directory.name}-prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"id": "p1", "text": "Hello"}]}))
    manifest = Manifest(
        edgepack_version="test",
        model={"name": "synthetic"},
        recipe={"backend": "ort", "precision": "int4"},
        target=target or {"name": "host-x86_64-cpu", "arch": os.uname().machine, "cuda_arch": None},
        tools={},
        plan={},
        stages=[],
    )
    index = FileHashIndex(directory.parent / f"{directory.name}-hashes.json")
    write_bundle(directory, manifest, {"engine": source, "prompts.json": prompts}, index)
    return directory


HOSTILE_KINDS = ("../../x", "../../../x", "absolute", "symlink", "fifo")
"""The hostile bundles of issue 11: manifests naming places outside the release, a symlinked file
and a FIFO. Each one's bundle id is recomputed, as anyone can."""


def make_hostile_bundle(directory: Path, kind: str, outside: Path) -> Path:
    """A bundle whose manifest (sealed with a recomputed id) lists a file reached as ``kind``;
    ``outside`` is a file beyond the bundle that a careless deploy reads or overwrites."""
    make_bundle(directory, {"model.onnx": b"honest"})
    payload = outside.read_bytes() if outside.exists() else b""
    if kind == "absolute":
        path = str(outside)
    elif kind.startswith(".."):
        # What the path reaches from the bundle holds the payload, so sizes and hashes match.
        path = kind
        reached = Path(os.path.normpath(directory / path))
        reached.parent.mkdir(parents=True, exist_ok=True)
        reached.write_bytes(payload)
    elif kind == "symlink":
        path = "engine/evil.bin"
        (directory / path).symlink_to(outside)
    else:
        path = "engine/pipe"
        os.mkfifo(directory / path)
    raw = json.loads((directory / "manifest.json").read_text())
    raw["files"].append(
        {
            "path": path,
            "size": len(payload),
            "sha256": sha256(payload).hexdigest(),
            "executable": False,
        }
    )
    raw["bundle_id"] = content_key({k: v for k, v in raw.items() if k not in ID_EXCLUDED_FIELDS})
    (directory / "manifest.json").write_text(json.dumps(raw, indent=2))
    return directory


def host_debian_release() -> str:
    """The device runs this host's Debian release: the cross compiler's glibc is that release's,
    and a runtime built against it needs one at least as new on the device."""
    for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    pytest.skip("this host is not a Debian release debootstrap can make for the device")


@contextlib.contextmanager
def _arm64_device_root(
    tmp_path_factory: pytest.TempPathFactory, include: tuple[str, ...]
) -> Iterator[DeviceRoot]:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("an aarch64 device's root filesystem needs root and debootstrap")
    with aarch64_binfmt():
        tarball = rootfs_tarball(host_debian_release(), arch="arm64", include=include)
        root = unpack_device_root(tarball, tmp_path_factory.mktemp("arm64") / "rootfs")
        yield root
        shutil.rmtree(root.path, ignore_errors=True)


@pytest.fixture(scope="module")
def arm64_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceRoot]:
    """An arm64 Debian with openssh-server, aarch64 binaries handed to qemu by binfmt_misc."""
    with _arm64_device_root(tmp_path_factory, ARM64_PACKAGES) as root:
        yield root


@pytest.fixture(scope="module")
def arm64_build_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceRoot]:
    """The same with the device's own compiler (``ARM64_BUILD_PACKAGES``)."""
    with _arm64_device_root(tmp_path_factory, ARM64_BUILD_PACKAGES) as root:
        yield root
