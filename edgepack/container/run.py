"""Containers through the engine's API, each owning its whole life: created, started, used and
always removed — on an error, on Ctrl-C, even one that arrives while it is being created.

:class:`OCIContainer` is a long-lived container that commands are exec'd in and files copied
into and out of (the C++ runtime's build in the ``cross`` image); :func:`run_in_container` runs
one command with bind mounts and, when asked, the host's GPUs (the engine builders)."""

from __future__ import annotations

import contextlib
import shlex
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from edgepack.container.client import (
    api_client,
    engine_errors,
    engine_kind,
    engine_limits,
    failure_reason,
    stream_lines,
)
from edgepack.container.image import IMAGE_HINT
from edgepack.errors import ToolFailedError

if TYPE_CHECKING:
    from docker import DockerClient

LABEL = "org.edgepack.container"
"""Every container edgepack creates carries this label (value: what it is for)."""
LIFETIME_S = 6 * 3600
"""A container whose owner was killed (SIGKILL: no clean-up ran) removes itself after this."""
REMOVE_TIMEOUT_S = 60
GPU_HINT = (
    "with --builder container the GPUs are requested: the engine needs the NVIDIA container "
    "toolkit (nvidia-ctk) for that"
)


def new_name() -> str:
    return f"edgepack-{uuid.uuid4().hex[:12]}"


def containers_with_label(client: DockerClient, value: str | None = None) -> list[str]:
    """Names of the containers (running or not) that carry edgepack's label."""
    selector = f"{LABEL}={value}" if value else LABEL
    with engine_errors("listing containers", image_hint=IMAGE_HINT):
        found = client.containers.list(all=True, filters={"label": selector})
    return [str(container.name) for container in found]


def remove_container(client: DockerClient, name: str) -> None:
    """Force-remove a container (killing what runs in it); harmless when there is none.

    The request runs in a thread of its own that is waited for even through a second Ctrl-C
    (signals reach only the main thread), so an impatient user cannot leave it behind."""
    import docker
    import requests

    def remove() -> None:
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            client.api.remove_container(name, force=True)

    worker = threading.Thread(target=remove, name=f"remove {name}", daemon=True)
    worker.start()
    deadline = time.monotonic() + REMOVE_TIMEOUT_S
    while worker.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(KeyboardInterrupt):
            worker.join(timeout=max(0.0, deadline - time.monotonic()))


class OCIContainer:
    """A started container of ``image``; removed on exit whatever happened inside.

    Should edgepack itself be killed, the container still goes: its only process sleeps for
    ``lifetime_s`` and it was created to be removed when that ends. Its stop signal is SIGKILL
    (``sleep`` as PID 1 ignores SIGTERM). It has no network unless ``network`` says.
    """

    def __init__(
        self,
        image: str,
        *,
        client: DockerClient | None = None,
        purpose: str = "build",
        network: str | None = "none",
        lifetime_s: int = LIFETIME_S,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.image = image
        self.lifetime_s = lifetime_s
        self.client = client or api_client()
        self.name = new_name()
        self.purpose = purpose
        self.network = network
        self.log = log

    def __enter__(self) -> OCIContainer:
        try:
            self.log(f"$ (engine) create --name {self.name} {self.image} sleep {self.lifetime_s}")
            with self._errors("creating a container"):
                self.client.api.create_container(
                    self.image, ["sleep", str(self.lifetime_s)], name=self.name,
                    labels={LABEL: self.purpose}, stop_signal="SIGKILL",
                    host_config=self.client.api.create_host_config(
                        auto_remove=True, network_mode=self.network,
                        ulimits=engine_limits(engine_kind(self.client)) or None,
                    ),
                )  # fmt: skip
            self.log(f"$ (engine) start {self.name}")
            with self._errors("starting the container"):
                self.client.api.start(self.name)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        self.log(f"$ (engine) remove --force {self.name}")
        remove_container(self.client, self.name)

    def copy_in(self, source: Path, destination: str) -> None:
        """Copy the contents of the directory ``source`` into ``destination`` (made first)."""
        self.exec(["mkdir", "-p", destination])
        self.log(f"$ (engine) put-archive {source}/. {self.name}:{destination}")
        with tempfile.TemporaryFile() as archive, self._errors(f"copying {source} in"):
            with tarfile.open(fileobj=archive, mode="w") as tar:
                tar.add(source, arcname=".")
            archive.seek(0)
            self.client.api.put_archive(self.name, destination, archive)

    def copy_out(self, source: str, destination: Path) -> None:
        """Copy the contents of the directory ``source`` into ``destination`` (made first)."""
        self.log(f"$ (engine) get-archive {self.name}:{source}/. {destination}")
        destination.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as archive, self._errors(f"copying {source} out"):
            chunks, _ = self.client.api.get_archive(self.name, source)
            for chunk in chunks:
                archive.write(chunk)
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
                tar.extractall(destination, members=_below_top(tar.getmembers()), filter="data")

    def exec(self, command: Sequence[str], cwd: str | None = None) -> str:
        """Run ``command`` in the container, each output line to the log; its output."""
        self.log(f"$ (container {self.name}) {shlex.join(command)}")
        with self._errors(f"running {command[0]} in the container"):
            exec_id = self.client.api.exec_create(self.name, list(command), workdir=cwd)["Id"]
            lines = []
            for line in stream_lines(self.client.api.exec_start(exec_id, stream=True)):
                lines.append(line)
                self.log(line)
            status = int(self.client.api.exec_inspect(exec_id)["ExitCode"])
        if status != 0:
            raise ToolFailedError(
                f"{Path(command[0]).name} failed in the container ({self.image}) with exit "
                f"status {status}: {failure_reason(lines)}",
                hint="rerun with -v to see the whole output",
            )
        return "\n".join(lines)

    def _errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return engine_errors(doing, image_hint=IMAGE_HINT)


def _below_top(members: Iterable[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """The members of a directory's archive (``install/...``) relative to that directory."""
    kept = []
    for member in members:
        _, _, rest = member.name.partition("/")
        if not rest:
            continue
        member.name = rest
        if member.islnk():
            member.linkname = member.linkname.partition("/")[2]
        kept.append(member)
    return kept


def run_in_container(
    client: DockerClient,
    image: str,
    argv: Sequence[str],
    *,
    mounts: dict[str, tuple[str, bool]],
    log_path: Path,
    gpus: bool = False,
    env: dict[str, str] | None = None,
    log: Callable[[str], None] = lambda line: None,
    purpose: str = "engine-build",
) -> int:
    """Run ``argv`` in a new container of ``image`` with ``mounts`` (container path → (host
    path, read-only)), the host's GPUs when asked, its output streamed into ``log_path``; the
    container is removed whatever happens. Returns the exit status."""
    from docker.types import DeviceRequest, Mount

    log(f"$ (container {image}) {' '.join(argv)}")
    name = new_name()
    doing = f"running {image}"
    hint = f"docker pull {image}"
    try:
        with engine_errors(doing, image_hint=hint, refused_hint=GPU_HINT if gpus else None):
            container = client.containers.create(
                image, list(argv), name=name, labels={LABEL: purpose}, environment=env or {},
                mounts=[Mount(target, source, type="bind", read_only=read_only)
                        for target, (source, read_only) in mounts.items()],
                device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpus else None,
                network_mode="none", ulimits=engine_limits(engine_kind(client)) or None,
            )  # fmt: skip
            container.start()
            _keep_logs(container.logs(stream=True, follow=True), log_path, log)
            return int(container.wait()["StatusCode"])
    finally:
        remove_container(client, name)


def _keep_logs(chunks: Iterable[bytes], log_path: Path, log: Callable[[str], None]) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as kept:
        for line in stream_lines(chunks):
            kept.write(line + "\n")
            log(line)
