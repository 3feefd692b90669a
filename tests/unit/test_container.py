"""The container engine's client without an engine: where nothing answers, the SDK's typed errors
become one-line errors with a hint; a failed image build's messages (the build API's decoded
JSON, as docker's classic builder sends them) become one line naming the log."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgepack.container import OCIContainer, api_client
from edgepack.container.client import engine_errors, failure_reason
from edgepack.container.image import build_failure, follow_build
from edgepack.errors import ExitCode, ToolFailedError, ToolMissingError


@pytest.fixture
def deaf_socket(tmp_path: Path) -> Iterator[Path]:
    """A unix socket that exists but where nothing listens: connecting is refused."""
    path = tmp_path / "engine.sock"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(path))
    try:
        yield path
    finally:
        bound.close()


def test_a_socket_where_nothing_listens_is_one_line_with_the_start_hint(
    deaf_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{deaf_socket}")
    with pytest.raises(ToolMissingError) as failure:
        api_client()
    error = failure.value
    assert error.exit_code == ExitCode.TOOL_MISSING and "\n" not in error.message
    assert error.message.startswith("no container engine answers on its API (")
    assert f"{deaf_socket}: " in error.message and "Connection refused" in error.message
    assert error.hint and "start dockerd" in error.hint and "podman system service" in error.hint


def test_a_missing_socket_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(ToolMissingError, match=f"{tmp_path}/none.sock: no socket"):
        api_client()


def test_without_docker_host_docker_and_podman_sockets_are_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgepack.container import api_endpoints

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert api_endpoints() == [
        "unix:///var/run/docker.sock",
        f"unix://{tmp_path}/podman/podman.sock",
        "unix:///run/podman/podman.sock",
    ]


def test_an_engine_that_stops_answering_fails_the_container_and_is_one_line(
    deaf_socket: Path,
) -> None:
    """A client made while the engine answered (its API version fixed), used after it went."""
    import docker

    client = docker.DockerClient(base_url=f"unix://{deaf_socket}", version="1.41", timeout=5)
    log: list[str] = []
    with (
        pytest.raises(ToolMissingError) as failure,
        OCIContainer("edgepack-cross", client=client, log=log.append),
    ):
        pytest.fail("a container started on an engine that does not answer")
    error = failure.value
    assert "\n" not in error.message
    assert error.message.startswith("creating a container: the container engine stopped answering")
    assert error.hint and "start dockerd" in error.hint
    assert log[-1].startswith("$ (engine) remove --force edgepack-")  # removal was still tried


def test_the_sdk_typed_errors_become_edgepack_errors() -> None:
    import docker

    with (
        pytest.raises(ToolMissingError) as missing,
        engine_errors("creating a container", image_hint="build the image"),
    ):
        raise docker.errors.ImageNotFound("404", explanation="No such image: edgepack-cross")
    assert missing.value.message == "creating a container: No such image: edgepack-cross"
    assert missing.value.hint == "build the image"
    with (
        pytest.raises(ToolFailedError) as refused,
        engine_errors("running x", image_hint="-", refused_hint="install nvidia-ctk"),
    ):
        raise docker.errors.APIError(
            "500", explanation='could not select device driver "" with capabilities: [[gpu]]'
        )
    assert refused.value.message == (
        'running x: the container engine refused: could not select device driver "" with '
        "capabilities: [[gpu]]"
    )
    assert refused.value.hint == "install nvidia-ctk"


FAILED_BUILD = [
    {"stream": "Step 1/2 : FROM debian:bookworm-slim"},
    {"stream": "\n"},
    {"stream": " ---> 5f3ab2e4b2a1\n"},
    {"stream": "Step 2/2 : RUN apt-get install -y edgepack-no-such-package"},
    {"stream": "\n"},
    {"stream": " ---> Running in 0c1d2e3f4a5b\n"},
    {"stream": "Reading package lists...\n"},
    {"stream": "\x1b[91mE: Unable to locate package edgepack-no-such-package\n\x1b[0m"},
    {
        "errorDetail": {"code": 100, "message": "The command '/bin/sh -c apt-get install -y "
                        "edgepack-no-such-package' returned a non-zero code: 100"},
        "error": "The command '/bin/sh -c apt-get install -y edgepack-no-such-package' returned "
        "a non-zero code: 100",
    },
]  # fmt: skip


def test_a_failed_build_is_one_line_naming_its_log(tmp_path: Path) -> None:
    kept, shown = io.StringIO(), []
    lines, error = follow_build(FAILED_BUILD, kept, shown.append)
    assert error is not None and error.endswith("returned a non-zero code: 100")
    assert kept.getvalue().splitlines() == shown == lines
    assert "Step 2/2 : RUN apt-get install -y edgepack-no-such-package" in lines
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim AS cross\nRUN apt-get install -y x\n")
    log_path = tmp_path / "image.log"
    failure = build_failure("edgepack-cross", dockerfile, "cross", lines, log_path,
                            base_present=True)  # fmt: skip
    assert failure.exit_code == ExitCode.TOOL_FAILED and "\n" not in failure.message
    assert failure.message == (
        f"building the container image edgepack-cross (stage cross of {dockerfile}) failed: "
        f"E: Unable to locate package edgepack-no-such-package (log: {log_path})"
    )
    missing_base = build_failure("edgepack-cross", dockerfile, "cross", lines, log_path,
                                 base_present=False)  # fmt: skip
    assert missing_base.hint and missing_base.hint.startswith(
        "no registry? make debian:bookworm-slim locally: debootstrap --variant=minbase bookworm"
    )


def test_a_successful_build_has_no_error() -> None:
    done = [{"stream": "Step 1/1 : FROM x\n"}, {"aux": {"ID": "sha256:ab"}},
            {"stream": "Successfully built ab\n"}]  # fmt: skip
    lines, error = follow_build(done, io.StringIO(), lambda line: None)
    assert error is None and lines == ["Step 1/1 : FROM x", "Successfully built ab"]


def test_the_compiler_says_why_not_the_build_driver() -> None:
    ninja = [
        "[3/9] Building CXX object CMakeFiles/edgepack-runtime.dir/src/json.cpp.o",
        "FAILED: CMakeFiles/edgepack-runtime.dir/src/json.cpp.o",
        "/usr/bin/aarch64-linux-gnu-g++ -O2 -Werror=return-type -c /src/project/src/json.cpp",
        "/src/project/src/json.cpp:212:2: error: #error edgepack-test: a broken source file",
        "ninja: build stopped: subcommand failed.",
    ]
    assert failure_reason(ninja) == ninja[3]
    assert failure_reason(["compiling", "ld: cannot find -lfoo: No such file", "done"]) == (
        "ld: cannot find -lfoo: No such file"
    )
    assert failure_reason([]) == "no output"
