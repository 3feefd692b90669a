"""Real OpenSSH servers for the integration tier: one on loopback, "devices" in network namespaces.

Each server gets its own host key, sshd_config and log in a temporary directory; the client side
gets its own key, known_hosts and ssh_config (pointed at by EDGEPACK_SSH_CONFIG), so nothing of the
user's ~/.ssh is read or written. Namespace devices are joined to this host by a veth pair whose
host end can be rate-limited (tc tbf) and cut (nftables drop). Everything is torn down afterwards.
A test that cannot get a component (not root, no sshd, no `ip netns`) is skipped with the reason.
The servers and namespaces themselves are made by ``ssh_netns`` (no pytest: the benchmarks use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from hashlib import sha256
from pathlib import Path

import pytest

from edgepack.bundle import ID_EXCLUDED_FIELDS, Manifest, write_bundle
from edgepack.cache import FileHashIndex, content_key
from edgepack.remote.ssh import SSH_CONFIG_ENV
from tests.integration.arm64_device import (
    ARM64_PACKAGES,
    DeviceRoot,
    aarch64_binfmt,
    unpack_device_root,
)
from tests.integration.container_fixtures import rootfs_tarball
from tests.integration.ssh_netns import (
    NetnsDevice,
    SshClientSide,
    SshServer,
    make_client_side,
    make_netns_device,
    missing_netns,
    missing_sshd,
    start_sshd,
)


def require(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason)


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
    """An arm64 Debian with openssh-server and a compiler (``ARM64_PACKAGES``), aarch64 binaries
    handed to qemu by binfmt_misc."""
    with _arm64_device_root(tmp_path_factory, ARM64_PACKAGES) as root:
        yield root
