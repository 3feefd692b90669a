"""An aarch64 device on this x86 host: a debootstrapped arm64 Debian with openssh-server, whose
every program (sshd, the shell it starts, the deployed runtime) runs under qemu-user.

binfmt_misc hands aarch64 ELF files to ``qemu-aarch64-static``; registered with the F flag, the
kernel opens the interpreter once, so it also works inside the device's root filesystem, which does
not contain it. sshd runs chrooted into that root, in a private mount namespace with /proc, /dev
and, over /proc/cpuinfo, an aarch64 cpuinfo (REFERENCE.md §10: ONNX Runtime's CPU detection
crashes on the host's x86 one). The mounts vanish with the namespace when the device stops.

A handler that is already registered with the F flag is used as it is; one registered here is
removed afterwards. The root filesystem is cached as a tarball (container_fixtures.ROOTFS_CACHE).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

QEMU_STATIC = Path("/usr/bin/qemu-aarch64-static")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "edgepack-aarch64"
# The ELF header of an aarch64 executable or shared object (e_machine 183), as binfmt_misc matches
# it: class 64-bit, little-endian, version 1, type EXEC or DYN (the mask ignores the last bit).
AARCH64_MAGIC = "7f454c460201010000000000000000000200b700"
AARCH64_MASK = "ffffffffffffff00fffffffffffffffffeffffff"
ARM64_PACKAGES = ("openssh-server", "g++", "cmake", "make", "nlohmann-json3-dev", "libcli11-dev")
"""The device's sshd, and its own aarch64 g++ and CMake with the runtime's header-only libraries (a
Jetson builds its Edge-LLM runtime on itself), run under qemu like every program of the device.
Every aarch64 device of the suite unpacks this one root: one debootstrap (minutes under qemu)."""

AARCH64_CPUINFO = "".join(
    f"processor\t: {index}\nBogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n"
    "CPU revision\t: 1\n\n"
    for index in range(os.cpu_count() or 1)
)
"""What a 4-core Cortex-A76-class board shows, one block per host core."""

# Run by `sh -c` as: rootfs cpuinfo command... ($0 stays the rootfs after the shift).
_CHROOT_SCRIPT = (
    'mount -t proc proc "$0/proc" && mount --bind "$1" "$0/proc/cpuinfo" '
    '&& mount --rbind /dev "$0/dev" && shift && exec chroot "$0" "$@"'
)


@dataclass(frozen=True)
class DeviceRoot:
    """A device's root filesystem on this host, and how to run a command in it."""

    path: Path

    @property
    def cpuinfo(self) -> Path:
        """What the device shows as /proc/cpuinfo (written when the root is unpacked)."""
        return self.path / "etc" / "edgepack-test" / "cpuinfo"

    def inside(self, path: Path) -> str:
        """``path`` (on this host, under the root) as the device sees it."""
        return "/" + path.relative_to(self.path).as_posix()

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` (paths as the device sees them) run in the root, in a mount namespace of its
        own with /proc, /dev and the aarch64 cpuinfo."""
        return [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _CHROOT_SCRIPT, str(self.path), str(self.cpuinfo), *argv,
        ]  # fmt: skip


def _fixed_aarch64_handler() -> str | None:
    """The name of an enabled binfmt_misc entry that runs aarch64 ELF files with the F flag."""
    for entry in BINFMT_DIR.iterdir():
        if entry.name in ("register", "status"):
            continue
        fields = dict(line.split(" ", 1) for line in entry.read_text().splitlines() if " " in line)
        if (
            entry.read_text().startswith("enabled")
            and fields.get("magic") == AARCH64_MAGIC
            and "F" in fields.get("flags:", "")
        ):
            return entry.name
    return None


def _mount_binfmt_misc() -> None:
    if (BINFMT_DIR / "register").exists():
        return
    done = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount binfmt_misc: {done.stderr.strip()}")


@contextlib.contextmanager
def aarch64_binfmt() -> Iterator[str]:
    """A binfmt_misc handler that runs aarch64 binaries anywhere, chroots included (see module)."""
    if os.geteuid() != 0:
        pytest.skip("registering a binfmt_misc handler needs root")
    if not QEMU_STATIC.is_file():
        pytest.skip(f"{QEMU_STATIC} is missing (apt-get install qemu-user-static)")
    _mount_binfmt_misc()
    existing = _fixed_aarch64_handler()
    if existing is not None:
        yield existing
        return
    rule = f":{BINFMT_ENTRY}:M::{_escaped(AARCH64_MAGIC)}:{_escaped(AARCH64_MASK)}:{QEMU_STATIC}:F"
    try:
        (BINFMT_DIR / "register").write_text(rule)
    except OSError as error:
        pytest.skip(f"cannot register a binfmt_misc handler for aarch64: {error.strerror}")
    try:
        yield BINFMT_ENTRY
    finally:
        with contextlib.suppress(OSError):
            (BINFMT_DIR / BINFMT_ENTRY).write_text("-1")


def _escaped(hex_digits: str) -> str:
    return "".join(f"\\x{hex_digits[i : i + 2]}" for i in range(0, len(hex_digits), 2))


def unpack_device_root(tarball: Path, destination: Path) -> DeviceRoot:
    """A fresh root filesystem from the cached tarball (a device's state is per test module)."""
    if shutil.which("unshare") is None or shutil.which("chroot") is None:
        pytest.skip("unshare and chroot (util-linux, coreutils) are needed for an aarch64 device")
    destination.mkdir(parents=True)
    subprocess.run(
        ["tar", "--numeric-owner", "-C", str(destination), "-xf", str(tarball)], check=True
    )
    root = DeviceRoot(destination)
    root.cpuinfo.parent.mkdir(parents=True, exist_ok=True)
    root.cpuinfo.write_text(AARCH64_CPUINFO, encoding="utf-8")
    return root
