"""One OCI container abstraction: docker or podman, driven through their CLI, owning the container's
whole life (create, copy in, exec, copy out, always remove).

edgepack uses it to build the C++ runtime in the ``cross`` image of the top-level Dockerfile. No
image is pulled: there is no registry to pull from on an offline host, so the image must exist
locally (``docker build --target cross -t edgepack-cross .``).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from edgepack.errors import ToolMissingError
from edgepack.process import run_tool

CROSS_IMAGE = "edgepack-cross"
ENGINES = ("docker", "podman")
IMAGE_HINT = "build it from the repository root: docker build --target cross -t edgepack-cross ."


def find_engine() -> str:
    """The first container engine whose daemon (or podman's runtime) answers."""
    installed = [engine for engine in ENGINES if shutil.which(engine)]
    if not installed:
        raise ToolMissingError(
            "neither docker nor podman is installed", hint="apt-get install docker.io (or podman)"
        )
    for engine in installed:
        probe = subprocess.run(
            [engine, "info"], capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return engine
    raise ToolMissingError(
        f"{' and '.join(installed)} installed, but no container engine answers "
        f"(`{installed[0]} info` fails)",
        hint="start the daemon (dockerd, or `systemctl start docker`) or use podman",
    )


def require_image(engine: str, image: str) -> None:
    probe = subprocess.run(
        [engine, "image", "inspect", image], capture_output=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        raise ToolMissingError(f"the container image {image!r} is not available", hint=IMAGE_HINT)


class OCIContainer:
    """A started container of ``image``; removed on exit whatever happened inside."""

    def __init__(
        self,
        image: str,
        *,
        engine: str | None = None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.image = image
        self.engine = engine or find_engine()
        self.name = f"edgepack-{uuid.uuid4().hex[:12]}"
        self.log = log

    def __enter__(self) -> OCIContainer:
        require_image(self.engine, self.image)
        self._run(["create", "--name", self.name, self.image, "sleep", "infinity"])
        self._run(["start", self.name])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        subprocess.run(
            [self.engine, "rm", "--force", self.name], capture_output=True, timeout=60, check=False
        )

    def copy_in(self, source: Path, destination: str) -> None:
        self.exec(["mkdir", "-p", destination])
        self._run(["cp", f"{source}/.", f"{self.name}:{destination}"])

    def copy_out(self, source: str, destination: Path) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        self._run(["cp", f"{self.name}:{source}/.", str(destination)])

    def exec(self, command: Sequence[str], cwd: str | None = None) -> str:
        workdir = ["--workdir", cwd] if cwd else []
        return self._run(["exec", *workdir, self.name, *command])

    def _run(self, arguments: list[str]) -> str:
        return run_tool(
            [self.engine, *arguments], install_hint="apt-get install docker.io", log=self.log
        )


def build_in_container(
    source: Path,
    libraries: Path,
    prefix: Path,
    *,
    image: str = CROSS_IMAGE,
    log: Callable[[str], None] = lambda line: None,
) -> None:
    """Configure, build and install the CMake project ``source`` in the cross image."""
    from edgepack.codegen import cmake_commands

    with OCIContainer(image, log=log) as container:
        container.copy_in(source, "/src/project")
        container.copy_in(libraries, "/src/libs")
        commands = cmake_commands(
            Path("/src/project"),
            Path("/src/build"),
            Path("/src/libs"),
            Path("/src/install"),
            ninja=True,  # the cross image installs ninja-build
        )
        for command in commands:
            container.exec(command)
        container.copy_out("/src/install", prefix)
