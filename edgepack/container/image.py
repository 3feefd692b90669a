"""The images edgepack builds from the top-level Dockerfile, through the engine's build API.

An image is built on first use (and rebuilt when the Dockerfile changes) with host networking, so
its ``apt-get`` needs nothing of the engine's bridge, NAT or DNS set-up. Nothing is pulled but the
Dockerfile's base image, and where no registry is reachable that must exist locally (the hint of
a failed build says how to make it with debootstrap). The build's whole output goes into a log
file that a failure names.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from edgepack.container.client import engine_errors, failure_reason, stream_lines
from edgepack.errors import ToolFailedError, ToolMissingError

if TYPE_CHECKING:
    from docker import DockerClient

CROSS_IMAGE = "edgepack-cross"
CROSS_TARGET = "cross"
DOCKERFILE_LABEL = "org.edgepack.dockerfile-sha256"
"""Images edgepack builds carry the sha256 of the Dockerfile they were built from."""
BUILD_NETWORK = "host"
BUILD_SUMMARY = r"The command |Error: building at STEP|ERROR: failed to solve|Removing intermediate"
"""The engine's closing words on a failed step (docker's classic builder, buildah, BuildKit)."""
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
"""docker's classic builder colours a step's stderr red."""
IMAGE_HINT = (
    "build it from the repository root: docker build --network host --target cross "
    "-t edgepack-cross ."
)


def default_dockerfile() -> Path | None:
    """The top-level Dockerfile of a source checkout (or editable install); None in a wheel."""
    path = Path(__file__).resolve().parents[2] / "Dockerfile"
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


def image_labels(client: DockerClient, image: str) -> dict[str, str] | None:
    """The labels of a local image, or None when the engine has no such image."""
    import docker

    with engine_errors(f"looking up the image {image}", image_hint=IMAGE_HINT):
        try:
            labels = client.images.get(image).labels or {}
        except docker.errors.ImageNotFound:
            return None
    return {str(key): str(value) for key, value in labels.items()}


def api_has_image(client: DockerClient, image: str) -> bool:
    return image_labels(client, image) is not None


def ensure_image(
    client: DockerClient,
    image: str = CROSS_IMAGE,
    *,
    dockerfile: Path | None = None,
    target: str = CROSS_TARGET,
    network: str | None = BUILD_NETWORK,
    logs_dir: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> bool:
    """Build ``image`` from the Dockerfile's stage ``target`` unless it is already there.

    An image edgepack built from another version of the Dockerfile is rebuilt; one built by hand
    (no edgepack label) is used as it is. Returns whether it built.
    """
    dockerfile = dockerfile or default_dockerfile()
    labels = image_labels(client, image)
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
    log_path = (logs_dir or Path(tempfile.gettempdir()) / "edgepack-logs") / (
        f"image-{image.replace('/', '_').replace(':', '_')}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    )
    build_image(
        client, image, dockerfile, target, digest, network=network, log_path=log_path, log=log
    )
    return True


def build_image(
    client: DockerClient,
    image: str,
    dockerfile: Path,
    target: str,
    digest: str,
    *,
    log_path: Path,
    network: str | None = BUILD_NETWORK,
    log: Callable[[str], None] = lambda line: None,
) -> None:
    """Build one stage of ``dockerfile`` (its context is an empty directory: the stages copy
    nothing in) with the engine's build API, tag it ``image``, its output into ``log_path``."""
    log(f"building the {image} image (Dockerfile stage {target}); the first build takes minutes")
    log(f"the image build's log: {log_path}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    doing = f"building the container image {image}"
    with tempfile.TemporaryDirectory(prefix="edgepack-image-") as context:
        (Path(context) / "Dockerfile").write_bytes(dockerfile.read_bytes())
        with log_path.open("w", encoding="utf-8") as kept, engine_errors(
            doing, image_hint=base_image_hint(stage_base_image(dockerfile, target))
        ):  # fmt: skip
            messages = client.api.build(
                path=context, target=target, tag=image, rm=True, forcerm=True, decode=True,
                labels={DOCKERFILE_LABEL: digest}, network_mode=network,
            )  # fmt: skip
            lines, error = follow_build(messages, kept, log)
    if error is not None:
        base_present = api_has_image(client, stage_base_image(dockerfile, target))
        raise build_failure(image, dockerfile, target, lines, log_path, base_present=base_present)


def follow_build(
    messages: Iterable[Mapping[str, Any]], kept: IO[str], log: Callable[[str], None]
) -> tuple[list[str], str | None]:
    """Follow the build API's decoded messages: each output line into ``kept`` and ``log``.
    Returns the lines and the build's error (None when it succeeded)."""
    lines: list[str] = []
    error: str | None = None

    def texts() -> Iterable[str]:
        nonlocal error
        for message in messages:
            if "error" in message:
                error = str(message["error"]).strip()
                yield str(message["error"]) + "\n"
            elif "stream" in message:
                yield str(message["stream"])
            elif "status" in message:  # pulling the base image
                yield f"{message['status']} {message.get('progress', '')}".rstrip() + "\n"

    for line in map(lambda text: COLOUR.sub("", text), stream_lines(texts())):
        kept.write(line + "\n")
        lines.append(line)
        log(line)
    return lines, error


def build_failure(
    image: str,
    dockerfile: Path,
    target: str,
    lines: list[str],
    log_path: Path,
    *,
    base_present: bool,
) -> ToolFailedError:
    """One line that says why a build failed and where its whole log is; the hint says how to
    make the base image where that is what is missing."""
    if not base_present:
        hint = base_image_hint(stage_base_image(dockerfile, target))
    else:
        hint = f"the whole output is in the log; fix the stage {target} of {dockerfile}"
    return ToolFailedError(
        f"building the container image {image} (stage {target} of {dockerfile}) failed: "
        f"{failure_reason(lines, BUILD_SUMMARY)} (log: {log_path})",
        hint=hint,
    )
