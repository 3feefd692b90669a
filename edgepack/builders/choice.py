"""``--builder local|container|ssh:HOST``: parsing, the default, plan-time problems, opening."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgepack.builders.job import BUILDER_KINDS, BuilderKind, EngineBuilder, ToolProbe, ToolSpec
from edgepack.errors import BadInputError, EdgepackError, ToolMissingError, did_you_mean

BUILDER_HELP = "local, container, or ssh:HOST (a GPU host; ssh:HOST:ROOT for another root)"


@dataclass(frozen=True)
class BuilderChoice:
    kind: BuilderKind
    host: str | None = None
    """For ssh: the host spec (``[user@]host[:ROOT]`` or ``ssh://…``)."""

    def __str__(self) -> str:
        return f"ssh:{self.host}" if self.kind == "ssh" else self.kind


def parse_builder(text: str) -> BuilderChoice:
    kind, _, host = text.partition(":")
    if kind == "ssh":
        if not host:
            raise BadInputError("--builder ssh needs a host", hint="--builder ssh:HOST")
        return BuilderChoice("ssh", host)
    if kind in ("local", "container") and not host:
        return BuilderChoice(kind)  # type: ignore[arg-type]
    raise BadInputError(
        f"unknown --builder {text!r}{did_you_mean(kind, BUILDER_KINDS)}", hint=BUILDER_HELP
    )


def resolve_builder(builder: str | None, host: str | None) -> str | None:
    """``build --host HOST`` is ``--builder ssh:HOST``: one builder, either spelling."""
    if host is None:
        return str(parse_builder(builder)) if builder is not None else None
    from_host = BuilderChoice("ssh", host)
    if builder is not None and parse_builder(builder) != from_host:
        raise BadInputError(
            f"--host {host} and --builder {builder} name different builders",
            hint=f"give one: --host {host} is --builder ssh:{host}",
        )
    return str(from_host)


def device_builder_problems(requested: str | None, backend: str) -> list[str]:
    """For a backend that builds its engine on the device: only ``ssh:DEVICE`` builds there."""
    if requested is None or parse_builder(requested).kind == "ssh":
        return []
    return [
        f"--builder {requested}: the {backend} engine is built on the device itself: "
        "--builder ssh:DEVICE (or --host DEVICE), or none (deploy builds it there)"
    ]


def engine_host(requested: str | None) -> str | None:
    """The device a ``ssh:`` builder names (the host spec, with its root)."""
    return parse_builder(requested).host if requested is not None else None


def container_has_image(image: str) -> bool:
    """Whether an engine answers here and has ``image``; False where none answers."""
    from edgepack.container import api_client, api_has_image

    try:
        return api_has_image(api_client(), image)
    except EdgepackError:
        return False


def default_builder(tool: ToolSpec) -> BuilderChoice | None:
    """``local`` where the tool runs here, else ``container`` where an engine has its image."""
    if shutil.which(tool.program):
        return BuilderChoice("local")
    if tool.image and container_has_image(tool.image):
        return BuilderChoice("container")
    return None


def unreachable(tool: ToolSpec) -> str:
    """The plan problem where no builder is reachable, with all three ways to get one."""
    image = tool.image or "its image"
    return (
        f"no engine builder for {tool.label} is reachable: {tool.program} is not installed here "
        f"(for --builder local: {tool.install_hint}), no Docker/Podman engine here has {image} "
        f"(for --builder container: docker pull {image}), and no --builder ssh:HOST names a GPU "
        f"host that has {tool.program}"
    )


def plan_builder(tool: ToolSpec, requested: str | None) -> tuple[str | None, list[str]]:
    """The builder a plan uses (as text) and its problems. An ssh host is not contacted here:
    the build checks it before any work (:func:`require_tool`)."""
    if requested is not None:
        choice = parse_builder(requested)
        if choice.kind == "local" and shutil.which(tool.program) is None:
            return str(choice), [f"--builder local: {tool.program} is not installed here; "
                                 f"{tool.install_hint}"]  # fmt: skip
        if choice.kind == "container" and not (tool.image and container_has_image(tool.image)):
            return str(choice), [f"--builder container: no Docker/Podman engine here has "
                                 f"{tool.image}; docker pull {tool.image}"]  # fmt: skip
        return str(choice), []
    found = default_builder(tool)
    return (str(found), []) if found else (None, [unreachable(tool)])


def open_builder(text: str, logs_dir: Path, image: str | None = None) -> EngineBuilder:
    choice = parse_builder(text)
    if choice.kind == "local":
        from edgepack.builders.local import LocalBuilder

        return LocalBuilder(logs_dir)
    if choice.kind == "container":
        from edgepack.builders.containerized import ContainerBuilder

        if image is None:
            raise BadInputError("--builder container: the toolchain names no image")
        return ContainerBuilder(image, logs_dir)
    from edgepack.builders.ssh import SshBuilder
    from edgepack.remote.hosts import parse_host

    assert choice.host is not None  # parse_builder requires it
    return SshBuilder(parse_host(choice.host), logs_dir)


def require_tool(builder: EngineBuilder, tool: ToolSpec) -> ToolProbe:
    """Probe the tool where it will run; its problem (missing, wrong version) raises now,
    before any stage works."""
    probe = builder.probe(tool)
    problem = tool.check(probe)
    if problem is None and not probe.present:
        problem = f"{tool.program} is not installed on {probe.where}"
    if problem is not None:
        raise ToolMissingError(f"--builder {builder.name}: {problem}", hint=tool.install_hint)
    return probe
