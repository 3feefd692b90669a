"""The Edge-LLM C++ runtime (templates/edgellm): rendered into the bundle here, compiled on the
device at deploy.

The runtime links Edge-LLM's runtime library and CUDA's, which exist only on the device, built
there for its ``EMBEDDED_TARGET``. So the bundle carries the rendered CMake project
(``runtime/src``: its ``toolchain.cmake`` from the target profile names the compiler triple, the
SM, CUDA and ``EMBEDDED_TARGET``), and deploy, after the engine, configures it on the device with
that toolchain file against the device's Edge-LLM checkout and ``/usr/local/cuda``, builds and
installs it into ``<root>/runtimes/<key>`` (keyed like the engine: the bundle and the device's
versions). An Edge-LLM configured for another ``EMBEDDED_TARGET`` stops the configure (REFERENCE
§4: on Orin a build without the toolchain file made kernels for the wrong SMs). A re-deploy finds
it built; a failure switches nothing and names the log.
"""

from __future__ import annotations

import json
import posixpath
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.backends.base import Stage
from edgepack.cache import content_key
from edgepack.errors import BadInputError, RemoteError, ToolFailedError
from edgepack.remote.connector import Connector, shell
from edgepack.runtime.spec import BINARY, BUILD_INFO, SOURCE_DIR, RuntimeBuild, RuntimeSpec

if TYPE_CHECKING:
    from edgepack.backends.edgellm.device import DeviceEdgeLlm
    from edgepack.bundle import Manifest
    from edgepack.plan import Plan

RUNTIME_SOURCES = "runtime/src"
RUNTIMES = "runtimes"
RUNTIME_RECORD = "runtime.json"
CUDA_ROOT = "/usr/local/cuda"
# $1 sources, $2 build dir, $3 install prefix, $4 log, then the configure arguments.
COMPILE_SCRIPT = """src=$1; build=$2; prefix=$3; log=$4; shift 4
rm -rf -- "$build" "$prefix" && mkdir -p -- "$build" || exit 125
{ cmake -S "$src" -B "$build" "$@" && cmake --build "$build" --parallel 2 &&
  cmake --install "$build" --prefix "$prefix"; } > "$log" 2>&1"""
# $1 the compiler triple: what the device lacks to compile the runtime, one name a line.
TOOLS_SCRIPT = """for tool in cmake "$1-g++"; do
  command -v "$tool" > /dev/null || echo "$tool"
done"""


def runtime_stage(plan: Plan, build: RuntimeBuild) -> Stage:
    """The runtime's sources for the bundle (``--runtime device``, the default)."""
    from edgepack.runtime.render import sources_hash

    if build.mode != "device":
        raise BadInputError(
            f"--runtime {build.mode}: the edgellm runtime is compiled on the device at deploy, "
            "against the Edge-LLM built there",
            hint="--runtime device (the default) or none",
        )
    config = {"mode": "device", "sources": sources_hash("edgellm")}
    return Stage(
        name="runtime",
        description="C++ runtime sources (compiled on the device at deploy)",
        config=config,
        inputs=(),
        run=lambda context: render_sources(RuntimeSpec.from_plan(context.plan), context.output_dir),
    )


def render_sources(spec: RuntimeSpec, out: Path) -> None:
    """``out/src`` (the CMake project) and ``out/build-info.json`` saying where it compiles."""
    from edgepack.runtime.render import render_project

    render_project(spec, out / SOURCE_DIR)
    info = {
        "mode": "device",
        "compiler": "cmake on the device against its Edge-LLM",
        "embedded_target": spec.embedded_target,
        "compiler_triple": spec.compiler_triple,
        "cuda_arch": spec.cuda_arch,
    }
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")


def has_sources(manifest: Manifest) -> bool:
    return any(f.path == f"{RUNTIME_SOURCES}/CMakeLists.txt" for f in manifest.files)


def runtime_dir(root: str, manifest: Manifest, device: dict[str, Any]) -> str:
    key = content_key({"bundle": manifest.bundle_id, "device": device, "runtime": "edgellm"})
    return posixpath.join(root, RUNTIMES, key[:16])


def read_record(connector: Connector, directory: str) -> dict[str, Any] | None:
    from edgepack.backends.edgellm.device import read_record as read_json_record

    return read_json_record(connector, directory, RUNTIME_RECORD)


def runtime_refusals(
    connector: Connector, manifest: Manifest, found: DeviceEdgeLlm, host: str
) -> list[str]:
    """Why the device cannot compile the bundle's runtime (checked before anything ships)."""
    if not has_sources(manifest):
        return []
    missing = connector.run(shell(TOOLS_SCRIPT, _triple(manifest)), check=False).stdout.split()
    problems = []
    if missing:
        problems.append(
            f"device {host} has no {', '.join(missing)} to compile the bundle's C++ runtime "
            "(apt-get install cmake g++), or build the bundle with --runtime none"
        )
    if found.home is None and found.tools:
        problems.append(
            f"device {host}: no Edge-LLM checkout (its cpp/ headers and build/ libraries) for "
            "the C++ runtime to compile against; set EDGELLM_HOME to it"
        )
    return problems


def _triple(manifest: Manifest) -> str:
    """The compiler the runtime's toolchain file names: the target profile's."""
    from edgepack.errors import EdgepackError
    from edgepack.targets import TargetRegistry

    try:
        return (
            TargetRegistry.default().get(str(manifest.target.get("name"))).toolchain.compiler_triple
        )
    except EdgepackError:
        return f"{manifest.target.get('arch', 'aarch64')}-linux-gnu"


def configure_arguments(source: str, home: str) -> list[str]:
    return [
        f"-DCMAKE_TOOLCHAIN_FILE={posixpath.join(source, 'toolchain.cmake')}",
        f"-DEDGELLM_ROOT={home}",
        f"-DCUDAToolkit_ROOT={CUDA_ROOT}",
    ]


def ensure_runtime(
    connector: Connector,
    manifest: Manifest,
    root: str,
    device: dict[str, Any],
    found: DeviceEdgeLlm,
    release_dir: str,
    logs_dir: Path,
    dry_run: bool = False,
) -> dict[str, Any] | None:
    """The device's compiled runtime for this release: reused when there, else compiled now."""
    if not has_sources(manifest):
        return None
    directory = runtime_dir(root, manifest, device)
    record = read_record(connector, directory)
    if record is not None:
        return {"status": "reused", "directory": directory, **record}
    if dry_run:
        return {"status": "would build", "directory": directory}
    assert found.home is not None  # runtime_refusals refused a device without a checkout
    source = posixpath.join(release_dir, RUNTIME_SOURCES)
    partial, build, log = directory + ".partial", directory + ".build", directory + ".log"
    arguments = configure_arguments(source, found.home)
    connector.make_dirs([posixpath.dirname(directory)])
    started = time.perf_counter()
    done = connector.run(
        shell(COMPILE_SCRIPT, source, build, partial, log, *arguments), check=False, timeout=None
    )
    wall = time.perf_counter() - started
    text = (connector.read_bytes(log) or (done.stdout + done.stderr).encode()).decode(
        errors="replace"
    )
    if done.status != 0:
        raise _compile_failure(connector.label, text, logs_dir, done.status)
    record = {
        "bundle_id": manifest.bundle_id,
        "device": device,
        "binary": posixpath.join(directory, BINARY),
        "configure": arguments,
        "embedded_target": _configured_target(text),
        "wall_s": wall,
        "built_at": time.time(),
    }
    connector.run(
        shell('printf %s "$1" > "$2"', json.dumps(record), posixpath.join(partial, RUNTIME_RECORD))
    )
    connector.remove_trees([directory, build])
    connector.rename(partial, directory)
    return {"status": "built", "directory": directory, **record}


def _configured_target(log: str) -> str | None:
    marker = "EDGEPACK_EMBEDDED_TARGET="
    found = [line.split(marker, 1)[1].strip() for line in log.splitlines() if marker in line]
    return found[-1] if found else None


def _compile_failure(host: str, log: str, logs_dir: Path, status: int) -> ToolFailedError:
    local = logs_dir / f"edgellm-runtime-{host}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(log, encoding="utf-8")
    return ToolFailedError(
        f"compiling the Edge-LLM runtime on {host} failed (exit status {status}): "
        f"{explain_compile(log)}; nothing was switched",
        hint=f"the whole log: {local}",
    )


def explain_compile(log: str) -> str:
    """The line that says why: CMake's error message, else the compiler's, else the last."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("CMake Error"):
            following = lines[index + 1 : index + 4]
            return " ".join(part for part in following if not part.startswith("Call Stack"))
    errors = [line for line in lines if "error:" in line]
    return (errors or lines or ["no output"])[0 if errors else -1]


def runtime_binary(
    connector: Connector, manifest: Manifest, root: str, device: dict[str, Any]
) -> str:
    """The compiled runtime of this release on this device, or why there is none."""
    directory = runtime_dir(root, manifest, device)
    record = read_record(connector, directory)
    if record is None:
        reason = "it carries no runtime sources" if not has_sources(manifest) else "none is built"
        raise RemoteError(
            f"{connector.label}: no compiled Edge-LLM runtime for this release on this device "
            f"({reason}: {directory})",
            hint="build the bundle with --runtime device (the default) and deploy it again: "
            "deploy compiles it there",
        )
    return str(record["binary"])
