"""One OCI container abstraction: docker or podman, driven through their CLI, owning the container's
whole life (create, copy in, exec, copy out, always remove).

edgepack uses it to build the C++ runtime in the ``cross`` image of the top-level Dockerfile. The
image is built on first use (and rebuilt when the Dockerfile changes) with host networking, so its
``apt-get`` needs nothing of the engine's bridge, NAT or DNS set-up; the build container itself runs
with no network at all. Nothing is pulled but the Dockerfile's base image, and where no registry
is reachable that must exist locally (the hint of a failed image build says how to make it).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from edgepack.errors import ToolFailedError, ToolMissingError
from edgepack.process import run_tool

CROSS_IMAGE = "edgepack-cross"
CROSS_TARGET = "cross"
ENGINES = ("docker", "podman")
ENGINE_HINT = "apt-get install docker.io (or podman)"
LABEL = "org.edgepack.container"
"""Every container edgepack creates carries this label (value: what it is for)."""
DOCKERFILE_LABEL = "org.edgepack.dockerfile-sha256"
"""Images edgepack builds carry the sha256 of the Dockerfile they were built from."""
BUILD_NETWORK = "host"
PROBE_TIMEOUT_S = 30
PODMAN_LIMIT = 4096
REMOVE_TIMEOUT_S = 60
LIFETIME_S = 6 * 3600
"""A container whose owner was killed (SIGKILL: no clean-up ran) removes itself after this."""
FAILURE_WORDS = r"error|denied|unable|not found|no such|could not|failed|not permitted"
BUILD_SUMMARY = (
    r"The command |Error: building at STEP|ERROR: failed to solve|Removing intermediate|: exit"
)
REASON_CHARS = 300
IMAGE_HINT = (
    "build it from the repository root: docker build --network host --target cross "
    "-t edgepack-cross ."
)


def _probe(command: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a short query of the engine; None when it does not answer in time."""
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no output"


def engine_limits(engine: str) -> list[str]:
    """``--ulimit`` options for podman, whose defaults (nofile 1048576) exceed the hard limits of
    many hosts and CI sandboxes, so runc fails to set them; podman also caps its own nproc (at
    32768 as root), and runc cannot raise a limit above its caller's. 4096 fits under all of
    these (or this process's own hard limit, when lower) and is plenty for a compiler. dockerd
    sets limits itself and needs none."""
    if Path(engine).name != "podman":
        return []
    import resource

    options = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(limit)[1]
        value = PODMAN_LIMIT if hard == resource.RLIM_INFINITY else min(PODMAN_LIMIT, hard)
        options += ["--ulimit", f"{name}={value}:{value}"]
    return options


def find_engine() -> str:
    """The first container engine whose daemon (or podman's runtime) answers."""
    installed = [engine for engine in ENGINES if shutil.which(engine)]
    if not installed:
        raise ToolMissingError("neither docker nor podman is installed", hint=ENGINE_HINT)
    reasons = []
    for engine in installed:
        probe = _probe([engine, "info"])
        if probe is not None and probe.returncode == 0:
            return engine
        why = "timed out" if probe is None else _first_line(probe.stderr)
        reasons.append(f"`{engine} info`: {why}")
    raise ToolMissingError(
        f"{' and '.join(installed)} installed, but no container engine answers "
        f"({'; '.join(reasons)})",
        hint="start the daemon (`dockerd &` as root, or `systemctl start docker`), or use podman",
    )


def image_labels(engine: str, image: str) -> dict[str, str] | None:
    """The labels of a local image, or None when the engine has no such image."""
    probe = _probe([engine, "image", "inspect", image])
    if probe is None or probe.returncode != 0:
        return None
    try:
        details = json.loads(probe.stdout)[0]
    except (ValueError, IndexError, KeyError):
        return {}
    labels = (details.get("Config") or {}).get("Labels") or details.get("Labels") or {}
    return {str(key): str(value) for key, value in labels.items()}


def has_image(engine: str, image: str) -> bool:
    return image_labels(engine, image) is not None


def require_image(engine: str, image: str) -> None:
    if not has_image(engine, image):
        raise ToolMissingError(f"the container image {image!r} is not available", hint=IMAGE_HINT)


# ---- the Dockerfile and its images ---------------------------------------------------------------


def default_dockerfile() -> Path | None:
    """The top-level Dockerfile of a source checkout (or editable install); None in a wheel."""
    path = Path(__file__).resolve().parent.parent / "Dockerfile"
    return path if path.is_file() else None


def dockerfile_digest(dockerfile: Path) -> str:
    return hashlib.sha256(dockerfile.read_bytes()).hexdigest()


def stage_base_image(dockerfile: Path, target: str = CROSS_TARGET) -> str:
    """The image the Dockerfile's stage ``target`` starts FROM, its ARG defaults substituted
    (``debian:bookworm-slim`` for ``cross``)."""
    defaults: dict[str, str] = {}
    seen_from = False
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        if keyword == "ARG" and not seen_from and len(words) > 1 and "=" in words[1]:
            name, _, value = words[1].partition("=")
            defaults[name] = value.strip("\"'")
        elif keyword == "FROM":
            seen_from = True
            if len(words) >= 4 and words[-2].upper() == "AS" and words[-1] == target:
                return re.sub(
                    r"\$\{(\w+)\}|\$(\w+)",
                    lambda match: defaults.get(match.group(1) or match.group(2), ""),
                    words[1],
                )
    raise ToolMissingError(f"{dockerfile} has no stage {target!r}", hint="restore the Dockerfile")


def debian_release(image: str) -> str | None:
    """``bookworm`` for ``debian:bookworm-slim``; None for an image debootstrap cannot make."""
    name, _, tag = image.partition(":")
    if name not in ("debian", "docker.io/library/debian") or not tag:
        return None
    return tag.removesuffix("-slim")


def base_image_hint(base: str) -> str:
    """How to make the Dockerfile's Debian base image where no registry can be reached."""
    release = debian_release(base)
    if release is None:
        return f"make {base} available to the engine (pull it where a registry is reachable)"
    return (
        f"no registry? make {base} locally: debootstrap --variant=minbase {release} ROOTFS "
        f"http://deb.debian.org/debian && tar -C ROOTFS -c . | docker import - {base}"
    )


def ensure_image(
    engine: str,
    image: str = CROSS_IMAGE,
    *,
    dockerfile: Path | None = None,
    target: str = CROSS_TARGET,
    network: str | None = BUILD_NETWORK,
    log: Callable[[str], None] = lambda line: None,
) -> bool:
    """Build ``image`` from the Dockerfile's stage ``target`` unless it is already there.

    An image edgepack built from another version of the Dockerfile is rebuilt; one built by hand
    (no edgepack label) is used as it is. Returns whether it built.
    """
    dockerfile = dockerfile or default_dockerfile()
    labels = image_labels(engine, image)
    if dockerfile is None:
        if labels is None:
            raise ToolMissingError(
                f"the container image {image!r} is not available, and there is no Dockerfile "
                "to build it from (edgepack is not installed from a source checkout)",
                hint=IMAGE_HINT,
            )
        return False
    digest = dockerfile_digest(dockerfile)
    if labels is not None and labels.get(DOCKERFILE_LABEL, digest) == digest:
        return False
    build_image(engine, image, dockerfile, target, digest, network=network, log=log)
    return True


def build_image(
    engine: str,
    image: str,
    dockerfile: Path,
    target: str,
    digest: str,
    *,
    network: str | None = BUILD_NETWORK,
    log: Callable[[str], None] = lambda line: None,
) -> None:
    """``docker build`` one stage of ``dockerfile`` (its context is an empty directory: the
    stages copy nothing in) and tag it ``image``."""
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def keep(line: str) -> None:
        if line.strip():
            tail.append(line.strip())
        log(line)

    with tempfile.TemporaryDirectory(prefix="edgepack-image-") as context:
        shutil.copyfile(dockerfile, Path(context) / "Dockerfile")
        command = [
            engine, "build", "--target", target, "--tag", image, "--force-rm",
            "--label", f"{DOCKERFILE_LABEL}={digest}", *engine_limits(engine),
            *(["--network", network] if network else []),
            context,
        ]  # fmt: skip
        log(f"building the {image} image (Dockerfile stage {target}); the first build takes ~1 min")
        try:
            run_tool(command, install_hint=ENGINE_HINT, log=keep)
        except ToolFailedError as error:
            base = stage_base_image(dockerfile, target)
            if not has_image(engine, base):
                hint = base_image_hint(base)
            else:
                hint = f"rerun with -v for the whole output (`{engine} build` of {dockerfile})"
            reason = _build_failure(list(tail))
            raise ToolFailedError(
                f"building the container image {image} (stage {target} of {dockerfile}) "
                f"failed: {reason}",
                hint=hint,
            ) from error


def _build_failure(lines: list[str]) -> str:
    """The line of a failed image build that says why, not the engine's closing summary (docker's
    "The command ... returned a non-zero code", buildah's "Error: building at STEP", BuildKit's
    "ERROR: failed to solve"), shortened from the front where it is long."""
    candidates = [line for line in lines if not re.match(BUILD_SUMMARY, line)]
    reasons = [line for line in candidates if re.search(FAILURE_WORDS, line, re.IGNORECASE)]
    reason = (reasons or candidates or lines or ["no output"])[-1]
    return reason if len(reason) <= REASON_CHARS else "…" + reason[-REASON_CHARS:]


# ---- containers ----------------------------------------------------------------------------------


def containers_with_label(engine: str, value: str | None = None) -> list[str]:
    """Names of the containers (running or not) that carry edgepack's label."""
    selector = f"{LABEL}={value}" if value else LABEL
    probe = _probe(
        [engine, "ps", "--all", "--filter", f"label={selector}", "--format", "{{.Names}}"]
    )
    if probe is None or probe.returncode != 0:
        raise ToolFailedError(
            f"`{engine} ps` failed: {_first_line(probe.stderr) if probe else 'timed out'}"
        )
    return probe.stdout.split()


class OCIContainer:
    """A started container of ``image``; removed on exit whatever happened inside (an error, an
    interrupt, even one that arrives while the container is being created).

    Should edgepack itself be killed, the container still goes: its only process sleeps for
    ``lifetime_s`` and it was created with ``--rm``. It has no network unless ``network`` says.
    """

    def __init__(
        self,
        image: str,
        *,
        engine: str | None = None,
        purpose: str = "build",
        network: str | None = "none",
        lifetime_s: int = LIFETIME_S,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.image = image
        self.lifetime_s = lifetime_s
        self.engine = engine or find_engine()
        self.name = f"edgepack-{uuid.uuid4().hex[:12]}"
        self.purpose = purpose
        self.network = network
        self.log = log

    def __enter__(self) -> OCIContainer:
        require_image(self.engine, self.image)
        try:
            self._run([
                "create", "--rm", "--name", self.name, "--label", f"{LABEL}={self.purpose}",
                *(["--network", self.network] if self.network else []),
                *engine_limits(self.engine), self.image, "sleep", str(self.lifetime_s),
            ])  # fmt: skip
            self._run(["start", self.name])
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
        """Force-remove the container (killing what runs in it); harmless when there is none.

        The engine's CLI runs in a session of its own and is waited for even through a second
        Ctrl-C, so an impatient user cannot leave the container behind.
        """
        # podman would wait 10 s for `sleep` (PID 1: it ignores SIGTERM) before killing it.
        now = ["--time", "0"] if Path(self.engine).name == "podman" else []
        command = [self.engine, "rm", "--force", *now, self.name]
        self.log("$ " + " ".join(command))
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + REMOVE_TIMEOUT_S
        while True:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
                return
            except KeyboardInterrupt:
                continue
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return

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
        return run_tool([self.engine, *arguments], install_hint=ENGINE_HINT, log=self.log)


# ---- the engine's API (Docker SDK; podman through its Docker-compatible socket) --------------

DOCKER_SOCKET = "unix:///var/run/docker.sock"
PODMAN_SOCKETS = ("{runtime}/podman/podman.sock", "/run/podman/podman.sock")
API_TIMEOUT_S = 30
API_HINT = (
    "start dockerd (or `podman system service --time=0 &` for podman's Docker-compatible "
    "socket), or set DOCKER_HOST; pip install docker"
)


def api_endpoints() -> list[str]:
    """Where an engine's API may answer: DOCKER_HOST alone when set, else docker's socket and
    podman's (rootless, then root)."""
    import os

    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    podman = [f"unix://{path.format(runtime=runtime)}" for path in PODMAN_SOCKETS]
    return [DOCKER_SOCKET, *podman]


def api_client() -> object:
    """A ``docker.DockerClient`` of the first engine whose API answers (docker or podman)."""
    try:
        import docker
    except ImportError as error:
        raise ToolMissingError(
            "the Docker SDK is not installed", hint="pip install docker"
        ) from error
    reasons = []
    for endpoint in api_endpoints():
        if endpoint.startswith("unix://") and not Path(endpoint[7:]).exists():
            reasons.append(f"{endpoint}: no socket")
            continue
        try:
            client = docker.DockerClient(base_url=endpoint, timeout=API_TIMEOUT_S)
            client.ping()
            return client
        except docker.errors.DockerException as error:
            reasons.append(f"{endpoint}: {_first_line(str(error))[:160]}")
    raise ToolMissingError(
        "no container engine answers on its API (" + "; ".join(reasons) + ")", hint=API_HINT
    )


def api_has_image(client: object, image: str) -> bool:
    import docker

    assert isinstance(client, docker.DockerClient)
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def run_in_container(
    client: object,
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
    import docker
    from docker.types import DeviceRequest, Mount

    assert isinstance(client, docker.DockerClient)
    log(f"$ (container {image}) {' '.join(argv)}")
    container = client.containers.create(
        image,
        list(argv),
        name=f"edgepack-{uuid.uuid4().hex[:12]}",
        labels={LABEL: purpose},
        mounts=[
            Mount(target, source, type="bind", read_only=read_only)
            for target, (source, read_only) in mounts.items()
        ],
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpus else None,
        environment=env or {},
        network_mode="none",
    )
    try:
        container.start()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w", encoding="utf-8") as kept:
            pending = ""
            for chunk in container.logs(stream=True, follow=True):
                pending += chunk.decode(errors="replace")
                *lines, pending = pending.split("\n")
                for line in lines:
                    kept.write(line + "\n")
                    log(line)
            if pending:
                kept.write(pending)
                log(pending)
        return int(container.wait()["StatusCode"])
    except docker.errors.APIError as error:
        raise ToolFailedError(
            f"the container engine refused to run {image}: {error.explanation or error}",
            hint="with --builder container the GPUs are requested: the engine needs the NVIDIA "
            "container toolkit (nvidia-ctk) for that",
        ) from error
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
