"""The one client of the container engine: the Docker SDK talking to dockerd's API socket, or to
podman's Docker-compatible one (``podman system service``), and the engine's typed errors turned
into edgepack's one-line errors with a hint."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import ToolFailedError, ToolMissingError

if TYPE_CHECKING:
    from docker import DockerClient

DOCKER_SOCKET = "unix:///var/run/docker.sock"
PODMAN_SOCKETS = ("{runtime}/podman/podman.sock", "/run/podman/podman.sock")
API_TIMEOUT_S = 120
REASON_CHARS = 300
API_HINT = (
    "start dockerd (`dockerd &` as root, or `systemctl start docker`), or podman's "
    "Docker-compatible socket (`podman system service --time=0 &`), or set DOCKER_HOST"
)
SDK_HINT = "pip install 'edgepack[container]' (the Docker SDK, package docker)"
PODMAN_LIMIT = 4096
FAILURE_WORDS = r"error|denied|unable|not found|no such|could not|failed|not permitted"
DIAGNOSTIC = r"(^|\s|:)(fatal )?error:"
"""A compiler's or CMake's own diagnostic (``file:1:2: error: ...``), preferred over what a build
driver prints after it (ninja's ``FAILED:``, make's ``Error 1``)."""


def api_endpoints() -> list[str]:
    """Where an engine's API may answer: DOCKER_HOST alone when set, else docker's socket and
    podman's (rootless, then root)."""
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    podman = [f"unix://{path.format(runtime=runtime)}" for path in PODMAN_SOCKETS]
    return [DOCKER_SOCKET, *podman]


def api_client() -> DockerClient:
    """A ``docker.DockerClient`` of the first engine whose API answers (docker or podman)."""
    try:
        import docker
    except ImportError as error:
        raise ToolMissingError("the Docker SDK is not installed", hint=SDK_HINT) from error
    reasons = []
    for endpoint in api_endpoints():
        if endpoint.startswith("unix://") and not Path(endpoint[7:]).exists():
            reasons.append(f"{endpoint.removeprefix('unix://')}: no socket")
            continue
        try:
            client = docker.DockerClient(base_url=endpoint, timeout=API_TIMEOUT_S)
            client.ping()
            return client
        except docker.errors.DockerException as error:
            reasons.append(f"{endpoint.removeprefix('unix://')}: {short(str(error), 160)}")
    raise ToolMissingError(
        "no container engine answers on its API (" + "; ".join(reasons) + ")", hint=API_HINT
    )


def engine_kind(client: DockerClient) -> str:
    """``podman`` or ``docker``, from the components the engine names in its version."""
    components = client.version().get("Components") or []
    names = " ".join(str(component.get("Name", "")) for component in components)
    return "podman" if "podman" in names.lower() else "docker"


def engine_limits(kind: str) -> list[object]:
    """Ulimits for podman, whose defaults (nofile 1048576) exceed the hard limits of many hosts
    and CI sandboxes, so runc fails to set them; podman also caps its own nproc (at 32768 as
    root), and runc cannot raise a limit above its caller's. 4096 fits under all of these (or
    this process's own hard limit, when lower) and is plenty for a compiler. dockerd sets
    limits itself and needs none."""
    if kind != "podman":
        return []
    import resource

    from docker.types import Ulimit

    limits: list[object] = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(limit)[1]
        value = PODMAN_LIMIT if hard == resource.RLIM_INFINITY else min(PODMAN_LIMIT, hard)
        limits.append(Ulimit(name=name, soft=value, hard=value))
    return limits


@contextlib.contextmanager
def engine_errors(
    doing: str, *, image_hint: str, refused_hint: str | None = None
) -> Iterator[None]:
    """Turn the SDK's typed errors while ``doing`` something into one-line edgepack errors: a
    missing image, a refusal by the engine, an engine that stopped answering."""
    import docker
    import requests

    try:
        yield
    except docker.errors.ImageNotFound as error:
        raise ToolMissingError(f"{doing}: {explanation(error)}", hint=image_hint) from error
    except docker.errors.APIError as error:
        raise ToolFailedError(
            f"{doing}: the container engine refused: {explanation(error)}", hint=refused_hint
        ) from error
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as error:
        raise ToolMissingError(
            f"{doing}: the container engine stopped answering ({short(str(error))})",
            hint=API_HINT,
        ) from error


def explanation(error: Exception) -> str:
    """The engine's own words of an APIError (not the SDK's ``500 Server Error for http+...``)."""
    said = getattr(error, "explanation", None)
    return short(str(said or error))


def short(text: str, limit: int = REASON_CHARS) -> str:
    """The first non-empty line of ``text``, shortened from the end where it is long."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else "no output"
    return line if len(line) <= limit else line[:limit] + "…"


def failure_reason(lines: list[str], summary: str | None = None) -> str:
    """The line of a failed build that says why: a compiler's or CMake's diagnostic where there
    is one, else the last line with a failure word; lines matching ``summary`` (a driver's
    closing words) are passed over. Shortened from the front where it is long."""
    candidates = [line.strip() for line in lines if line.strip()]
    if summary:
        candidates = [line for line in candidates if not re.match(summary, line)]
    diagnostics = [line for line in candidates if re.search(DIAGNOSTIC, line, re.IGNORECASE)]
    failures = [line for line in candidates if re.search(FAILURE_WORDS, line, re.IGNORECASE)]
    reason = (diagnostics[:1] or failures[-1:] or candidates[-1:] or ["no output"])[0]
    return reason if len(reason) <= REASON_CHARS else "…" + reason[-REASON_CHARS:]


def stream_lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """The lines of a streamed output (log or exec chunks, split anywhere), without newlines."""
    pending = ""
    for chunk in chunks:
        pending += chunk.decode(errors="replace") if isinstance(chunk, bytes) else chunk
        *lines, pending = pending.split("\n")
        yield from (line.rstrip("\r") for line in lines)
    if pending:
        yield pending
