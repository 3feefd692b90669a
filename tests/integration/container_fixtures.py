"""A real container engine for the integration tier: dockerd started here when none answers, and
the Dockerfile's Debian base image made here (debootstrap + ``docker import``) when it is missing,
because no registry may be reachable.

The debootstrapped root filesystem is cached as a tarball in :data:`ROOTFS_CACHE`, so a later
session on the same machine imports it in seconds; the images stay in the engine's own store. A
dockerd started here logs into the session's temporary directory and is stopped at the end of the
session; one that was already running is left alone. Where none of this can be done (not root,
dockerd or debootstrap missing, dockerd does not come up) the tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edgepack.container import (
    api_client,
    api_has_image,
    debian_release,
    default_dockerfile,
    stage_base_image,
)
from edgepack.errors import ToolMissingError

if TYPE_CHECKING:
    from docker import DockerClient

ROOTFS_CACHE = Path(os.environ.get("EDGEPACK_TEST_ROOTFS_CACHE", "/var/cache/edgepack-test"))
DEBIAN_MIRROR = os.environ.get("EDGEPACK_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DOCKERD_START_S = 60
DOCKERD_STOP_S = 30
DEBOOTSTRAP_S = 900


def answering_engine() -> DockerClient | None:
    """A client of the engine whose API answers here (edgepack's own factory); None if none."""
    try:
        return api_client()
    except ToolMissingError:
        return None


def _log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


@contextlib.contextmanager
def dockerd_running(directory: Path) -> Iterator[DockerClient]:
    """An engine that answers: the one already running, or a dockerd started (and stopped) here."""
    client = answering_engine()
    if client is not None:
        yield client
        return
    if os.geteuid() != 0:
        pytest.skip("no container engine answers, and starting dockerd needs root")
    if shutil.which("dockerd") is None:
        pytest.skip("no container engine answers, and dockerd is not installed (apt docker.io)")
    log = directory / "dockerd.log"
    with log.open("ab") as output:
        daemon = subprocess.Popen(["dockerd"], stdout=output, stderr=output, start_new_session=True)
    try:
        deadline = time.monotonic() + DOCKERD_START_S
        while (client := answering_engine()) is None:
            if daemon.poll() is not None:
                pytest.skip(f"dockerd exited with status {daemon.returncode}: {_log_tail(log)}")
            if time.monotonic() > deadline:
                pytest.skip(f"dockerd did not answer within {DOCKERD_START_S} s: {_log_tail(log)}")
            time.sleep(0.5)
        yield client
    finally:
        _stop(daemon)


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets dockerd stop its containers and its containerd; the group is killed after."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=DOCKERD_STOP_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait()


def rootfs_tarball(release: str, arch: str | None = None, include: tuple[str, ...] = ()) -> Path:
    """A debootstrapped (minbase) Debian ``release`` with ``include``d packages as a tarball, made
    once and cached. A foreign ``arch`` (Debian's name, e.g. arm64) is bootstrapped in two stages,
    the second run in the new root under qemu-user: binfmt_misc must hand its binaries to qemu."""
    name = "-".join(["debian", release, "minbase", arch or os.uname().machine, *include])
    tarball = ROOTFS_CACHE / f"{name}.tar"
    if tarball.is_file():
        return tarball
    ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = ROOTFS_CACHE / f"{name}-rootfs.partial"
    partial = tarball.with_name(tarball.name + ".partial")
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        _debootstrap(release, rootfs, arch, include)
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True
        )
        partial.rename(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return tarball


def _debootstrap(release: str, rootfs: Path, arch: str | None, include: tuple[str, ...]) -> None:
    options = ["--variant=minbase", *(["--include=" + ",".join(include)] if include else [])]
    stages = [["debootstrap", *options, release, str(rootfs), DEBIAN_MIRROR]]
    if arch is not None:
        stages = [
            ["debootstrap", f"--arch={arch}", "--foreign", *options, release, str(rootfs),
             DEBIAN_MIRROR],
            ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"],
        ]  # fmt: skip
    for command in stages:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DEBOOTSTRAP_S, check=False
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-500:]
            pytest.skip(f"{' '.join(command[:2])} ({release}) failed: {output}")


def ensure_base_image(client: DockerClient) -> str:
    """The Dockerfile's cross base image, made by debootstrap + import where it is missing."""
    dockerfile = default_dockerfile()
    if dockerfile is None:
        pytest.skip("no Dockerfile next to the edgepack package (not a source checkout)")
    base = stage_base_image(dockerfile)
    if api_has_image(client, base):
        return base
    release = debian_release(base)
    if release is None:
        pytest.skip(f"the base image {base} is missing and is not a Debian image to debootstrap")
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip(f"the base image {base} is missing; making it needs root and debootstrap")
    tarball = rootfs_tarball(release)
    repository, _, tag = base.partition(":")
    client.api.import_image(str(tarball), repository=repository, tag=tag, changes=['CMD ["bash"]'])
    assert api_has_image(client, base), f"importing {tarball} as {base} made no image"
    return base


@contextlib.contextmanager
def container_engine_with_base_image(directory: Path) -> Iterator[DockerClient]:
    """A client of an engine that answers and has the Dockerfile's base image (see the module)."""
    with dockerd_running(directory) as client:
        ensure_base_image(client)
        yield client
