"""The fault trials' device side: a namespace device with a real sshd, deploy roots on the file
systems a trial needs (a plain directory, a size-limited tmpfs, a loop-mounted ext4 image), the
real `edgepack deploy` process, and what a trial checks on the device afterwards.

Everything here reads the device's disk directly (the namespace device shares this host's mounts),
independently of edgepack's own view, so a check cannot agree with edgepack by construction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.bundle import MANIFEST, verify_bundle
from edgepack.errors import BundleError
from edgepack.remote.ssh import SSH_CONFIG_ENV
from tests.integration.conftest import (
    NetnsDevice,
    SshClientSide,
    SshServer,
    make_client_side,
    make_netns_device,
    start_sshd,
)

REPOSITORY = Path(__file__).resolve().parents[2]
LINK_RATE = "40mbit"
IO_TIMEOUT_S = "10"
PLAIN_SHELL = ("SetEnv SHLVL=1",)
"""Sessions whose bash skips this build machine's ~/.bashrc (bash sources it under sshd only at
shell level 1): its `pyenv init` costs each command 0.35 s, and a trial that kills the device
mid-login would leave pyenv's rehash lock behind for every other shell of the machine."""
"""Generous: on a loaded 2-core machine a remote command can take seconds to start."""


@dataclass
class Device:
    """One namespace device with its sshd, reached as ``alias`` through ``client``'s config."""

    client: SshClientSide
    netns: NetnsDevice
    server: SshServer

    @classmethod
    def make(cls, directory: Path, alias: str = "trial") -> Device:
        client = make_client_side(directory / f"client-{alias}")
        netns = make_netns_device()
        try:
            server = start_sshd(
                client, directory / f"sshd-{alias}", alias, netns.device_address, 2222,
                netns.name, extra_config=PLAIN_SHELL,
            )  # fmt: skip
        except BaseException:
            netns.destroy()
            raise
        netns.limit_rate(LINK_RATE)
        return cls(client, netns, server)

    def kill_everything(self) -> None:
        """Every process of the device dies at once: sshd and the sessions it runs."""
        self.netns.power_off()
        if self.server.process is not None:
            self.server.process.wait()
            self.server.process = None

    def restart_sshd(self) -> None:
        self.kill_everything()
        self.server.start()

    def destroy(self) -> None:
        self.server.stop()
        self.netns.destroy()


@dataclass
class DeployRun:
    """One `edgepack deploy --json` process."""

    process: subprocess.Popen[str]
    started: float
    stdout: str = ""
    stderr: str = ""
    code: int | None = None
    peak_rss_kb: int = 0
    ended: float = 0.0

    @property
    def outcome(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.stdout) if self.stdout.strip().startswith("[") else []
        except ValueError:
            parsed = []
        return parsed[0] if parsed else {}

    def finished(self) -> bool:
        """Whether the process has ended (reaped here, with wait4, for its peak RSS)."""
        if self.code is None:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                self.process.returncode = self.code
                self.peak_rss_kb = usage.ru_maxrss
                self.ended = time.monotonic()
        return self.code is not None

    def wait(self, timeout: float = 120) -> DeployRun:
        """Wait for the process (killed past ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not self.finished():
            if time.monotonic() > deadline:
                self.process.kill()
            time.sleep(0.01)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.stdout, self.stderr = self.process.stdout.read(), self.process.stderr.read()
        return self

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)


def start_deploy(device: Device, root: Path, bundle: Path, *extra: str) -> DeployRun:
    environment = {
        **os.environ,
        SSH_CONFIG_ENV: str(device.client.config),
        "PYTHONPATH": str(REPOSITORY),
        "EDGEPACK_CACHE_DIR": str(root.parent / "client-cache"),
    }
    environment.pop("SSH_AUTH_SOCK", None)
    argv = [
        sys.executable, "-m", "edgepack", "deploy", "--json", "--host",
        f"{device.server.alias}:{root}", "--bundle", str(bundle), "--timeout", IO_TIMEOUT_S, *extra,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        preexec_fn=_default_sigint,
    )  # fmt: skip
    return DeployRun(process, time.monotonic())


def _default_sigint() -> None:
    """A runner started in the background has SIGINT ignored, which its children would inherit
    (and Ctrl-C would then do nothing to them): they get the default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def deploy_now(device: Device, root: Path, bundle: Path) -> DeployRun:
    return start_deploy(device, root, bundle).wait()


# --- deploy roots ---------------------------------------------------------------------------------


@contextlib.contextmanager
def shared_mounts(directory: Path) -> Iterator[None]:
    """Mounts made under ``directory`` reach the device: `ip netns exec` gives sshd its own mount
    namespace (a slave of this one), which sees only mounts made under a shared mount."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-R", "-l", str(directory)], capture_output=True)


@dataclass
class Root:
    """A deploy root for one trial and what it is mounted on."""

    path: Path
    kind: str
    """"dir", "tmpfs" (a size limit) or "ext4" (a loop-mounted image whose unsynced writes a power
    loss discards)."""
    image: Path | None = None
    mounted: list[Path] = field(default_factory=list)

    def unmount(self) -> None:
        for mount in reversed(self.mounted):
            subprocess.run(["umount", str(mount)], capture_output=True)
            if subprocess.run(["mountpoint", "-q", str(mount)]).returncode == 0:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        self.mounted.clear()


def make_image(path: Path, megabytes: int) -> None:
    with path.open("wb") as image:
        image.truncate(megabytes << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", str(path)], check=True)


def mount_image(image: Path, at: Path) -> None:
    """commit=1: the journal commits every second, so a power loss soon after a deploy finds the
    metadata (renames, the `current` link) committed while unsynced file data is not."""
    at.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,commit=1", str(image), str(at)], check=True)


def mount_tmpfs(at: Path, megabytes: int) -> None:
    at.mkdir(parents=True, exist_ok=True)
    options = f"size={megabytes}m"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(at)], check=True)


def copy_tree(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-a", f"{source}/.", str(target)], check=True)


def fill_disk(root: Path) -> Path:
    """Take every free byte of the file system under ``root`` (another writer on the device)."""
    filler = root / "filler"
    # Written, not fallocated: a fallocate larger than the free space fails and gives it all back.
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 20, 4096):
            with contextlib.suppress(OSError):  # ENOSPC: full, as wanted
                while handle.write(b"\0" * size):
                    pass
    return filler


def snapshot_after_power_loss(root: Root, device: Device, deploy: DeployRun) -> Path:
    """Power off: the device's processes die, and its disk keeps only what reached the block
    device. The image is copied while still mounted and never synced: the mounted file system's
    dirty page cache (unsynced writes) is not in the copy."""
    assert root.image is not None
    device.kill_everything()
    crashed = root.image.with_name(root.image.stem + "-after-power-loss.img")
    subprocess.run(["cp", "--sparse=always", str(root.image), str(crashed)], check=True)
    deploy.signal(signal.SIGKILL)
    return crashed


def reboot_from(root: Root, crashed: Path) -> None:
    """The device comes back with the disk the power loss left (journal replayed on mount)."""
    root.unmount()
    assert root.image is not None
    crashed.replace(root.image)
    mount_image(root.image, root.path)
    root.mounted.append(root.path)


# --- what a trial checks on the device ----------------------------------------------------------


@dataclass
class DeviceCheck:
    current: str | None
    complete: bool
    """``current`` points to a release directory whose every file matches its manifest."""
    partial_selected: bool
    problem: str = ""


def check_device(root: Path) -> DeviceCheck:
    link = root / "current"
    if not link.is_symlink():
        return DeviceCheck(None, False, False, "no current link")
    target = str(link.readlink())
    previous = str((root / "previous").readlink()) if (root / "previous").is_symlink() else ""
    partial = target.endswith(".partial") or previous.endswith(".partial")
    try:
        verify_bundle(root / "current")
    except BundleError as error:
        return DeviceCheck(target, False, partial, error.message[:300])
    except OSError as error:
        return DeviceCheck(target, False, partial, f"unreadable: {error}")
    return DeviceCheck(target, True, partial)


def bundle_files(bundle: Path) -> list[tuple[str, int, str]]:
    manifest = json.loads((bundle / MANIFEST).read_text())
    own = (bundle / MANIFEST).read_bytes()
    records = [(r["path"], r["size"], r["sha256"]) for r in manifest["files"]]
    return [*records, (MANIFEST, len(own), hashlib.sha256(own).hexdigest())]


def missing_bytes(root: Path, bundle: Path) -> int:
    """The bytes of ``bundle`` the device does not hold yet, by reading its disk: a file counts
    whole if some complete release or the partial one holds it, by its length if the partial one
    holds a prefix of it, else not at all."""
    releases = root / "releases"
    short = json.loads((bundle / MANIFEST).read_text())["bundle_id"][:16]
    complete = [p for p in releases.iterdir() if p.is_dir() and not p.name.endswith(".partial")]
    partial = releases / f"{short}.partial"
    missing = 0
    for path, size, digest in bundle_files(bundle):
        if any(_digest(place / path) == digest for place in [*complete, partial]):
            continue
        missing += size - _prefix_length(partial / path, bundle / path, size)
    return missing


def _digest(path: Path) -> str | None:
    if not path.is_file() or path.is_symlink():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _prefix_length(partial: Path, original: Path, size: int) -> int:
    if not partial.is_file():
        return 0
    length = partial.stat().st_size
    if not 0 < length < size:
        return 0
    with partial.open("rb") as have, original.open("rb") as want:
        remaining = length
        while remaining:
            count = min(remaining, 1 << 20)
            if have.read(count) != want.read(count):
                return 0
            remaining -= count
    return length


def partial_size(root: Path, name: str) -> int:
    sizes = [p.stat().st_size for p in (root / "releases").glob(f"*.partial/{name}")]
    return max(sizes, default=0)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
