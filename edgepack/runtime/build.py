"""Build a rendered runtime with CMake and the project's own toolchain file: ``native`` on this
host, ``cross`` with the target triple's cross compiler (Debian's ``g++-aarch64-linux-gnu``),
``container`` in the cross image of the top-level Dockerfile. The target's libraries the runtime
links against come from the backend (:func:`build_runtime` takes their directory).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.container.image import CROSS_IMAGE
from edgepack.errors import BadInputError, ToolMissingError
from edgepack.process import run_tool
from edgepack.runtime.render import render_project
from edgepack.runtime.spec import (
    BINARY,
    BUILD_INFO,
    BUILD_JOBS,
    SOURCE_DIR,
    RuntimeMode,
    RuntimeSpec,
    host_arch,
)

if TYPE_CHECKING:
    from docker import DockerClient


def _compiler_hint(triple: str) -> str:
    return f"apt-get install g++-{triple.replace('_', '-')} (Debian/Ubuntu)"


LIBRARY_HEADERS = {"nlohmann/json.hpp": "nlohmann-json3-dev", "CLI/CLI.hpp": "libcli11-dev"}
"""The header-only libraries of the runtime → their Debian package; architecture-independent, so
a cross build takes them from this host (the CMake project links in only their folders)."""
HEADER_ROOT = Path("/usr/include")


def check_library_headers(sysroot: str | None, root: Path = HEADER_ROOT) -> None:
    """Raise when a library header is neither under ``root`` nor in the sysroot's /usr/include."""
    roots = [root] + ([Path(sysroot) / "usr" / "include"] if sysroot else [])
    for header, package in LIBRARY_HEADERS.items():
        if not any((folder / header).is_file() for folder in roots):
            raise ToolMissingError(
                f"{header} is missing: the C++ runtime needs the Debian package {package}",
                hint=f"apt-get install {package}",
            )


def check_build_tools(spec: RuntimeSpec, mode: RuntimeMode) -> None:
    """Raise before any work when this host cannot build ``spec`` in ``mode``."""
    if mode == "native" and spec.arch != host_arch():
        raise BadInputError(
            f"a native build on this {host_arch()} host cannot produce a {spec.arch} runtime "
            f"for {spec.target_name}",
            hint="use --runtime cross (or container)",
        )
    if mode in ("native", "cross"):
        for program, hint in (
            ("cmake", "apt-get install cmake"),
            (f"{spec.compiler_triple}-g++", _compiler_hint(spec.compiler_triple)),
        ):
            if shutil.which(program) is None:
                raise ToolMissingError(f"{program} is not installed", hint=hint)
        check_library_headers(spec.sysroot)


def build_runtime(
    spec: RuntimeSpec,
    mode: RuntimeMode,
    output_dir: Path,
    *,
    libraries: Path,
    logs_dir: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Render, configure, compile and install the runtime into ``output_dir``, linking against the
    target's libraries in ``libraries`` (a container build's image build logs into ``logs_dir``).

    ``output_dir`` gets ``bin/``, ``lib/``, the rendered sources in ``src/`` and the build info.
    """
    check_build_tools(spec, mode)
    source = output_dir / SOURCE_DIR
    render_project(spec, source)
    scratch = output_dir.parent / f"{output_dir.name}.cmake-build"
    started = _now()
    try:
        if mode == "container":
            build_in_container(source, libraries, output_dir, logs_dir=logs_dir, log=log)
        else:
            cmake_build(source, scratch, libraries, output_dir, log=log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = _build_info(spec, mode, output_dir, _now() - started)
    (output_dir / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def cmake_commands(
    source: Path, build: Path, libraries: Path, prefix: Path, *, ninja: bool
) -> list[list[str]]:
    """Configure, build and install with the project's own toolchain file."""
    generator = ["-G", "Ninja"] if ninja else []
    return [
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            *generator,
            f"-DCMAKE_TOOLCHAIN_FILE={source / 'toolchain.cmake'}",
            f"-DEDGEPACK_ORT_LIB_DIR={libraries}",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        ["cmake", "--build", str(build), "--parallel", BUILD_JOBS],
        ["cmake", "--install", str(build), "--prefix", str(prefix)],
    ]


def cmake_build(
    source: Path, build: Path, libraries: Path, prefix: Path, log: Callable[[str], None]
) -> None:
    ninja = shutil.which("ninja") is not None
    for command in cmake_commands(source, build, libraries, prefix, ninja=ninja):
        run_tool(command, install_hint="apt-get install cmake g++", log=log)


def _now() -> float:
    return time.perf_counter()


def _build_info(
    spec: RuntimeSpec, mode: RuntimeMode, output_dir: Path, wall_s: float
) -> dict[str, Any]:
    binary = output_dir / BINARY
    return {
        "backend": spec.backend,
        "target": spec.target_name,
        "arch": spec.arch,
        "mode": mode,
        "compiler": spec.compiler_triple + "-g++",
        "wall_s": round(wall_s, 3),
        "binary": BINARY,
        "binary_bytes": binary.stat().st_size,
        "libraries": sorted(path.name for path in (output_dir / "lib").iterdir()),
    }


def build_in_container(
    source: Path,
    libraries: Path,
    prefix: Path,
    *,
    image: str = CROSS_IMAGE,
    client: DockerClient | None = None,
    logs_dir: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> None:
    """Configure, build and install the CMake project ``source`` in the cross image (built first
    if it is missing), with no network; the installed tree is copied out to ``prefix``."""
    from edgepack.container import OCIContainer, api_client, ensure_image

    client = client or api_client()
    if image == CROSS_IMAGE:
        ensure_image(client, image, logs_dir=logs_dir, log=log)
    with OCIContainer(image, client=client, purpose="runtime-build", log=log) as container:
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
