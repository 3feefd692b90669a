"""--builder container through the engine's API (Docker SDK): a job runs in an image with its
input mounted read-only and its output read-write, its log streamed into a file, its status
returned, the container removed whatever happened. The image is the Dockerfile's Debian base
(made by the fixtures where missing); no GPUs are requested (none here): ``gpus=False``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edgepack.builders import BuildJob, InputPath, OutputPath, ToolSpec, require_tool
from edgepack.builders.containerized import ContainerBuilder
from edgepack.container import LABEL, containers_with_label, default_dockerfile, stage_base_image
from edgepack.errors import ToolFailedError
from tests.integration.container_fixtures import container_engine_with_base_image

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DockerClient, str]]:
    with container_engine_with_base_image(tmp_path_factory.mktemp("engine")) as engine:
        dockerfile = default_dockerfile()
        assert dockerfile is not None
        yield engine, stage_base_image(dockerfile)


def _tool(image: str) -> ToolSpec:
    return ToolSpec(
        program="sh", label="a shell", install_hint="-", image=image, gpus=False,
        probe_argv=("sh", "-c", "echo '[TensorRT-LLM] TensorRT-LLM version: 1.2.1'"),
        parse_version=lambda text: text.split("version: ")[-1].strip() or None,
    )  # fmt: skip


def test_a_job_runs_in_the_image_with_its_mounts(
    base_image: tuple[DockerClient, str], tmp_path: Path
) -> None:
    engine, image = base_image
    source = tmp_path / "in"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"abc")
    builder = ContainerBuilder(image, tmp_path / "logs")
    assert require_tool(builder, _tool(image)).version == "1.2.1"
    script = 'cp "$1/weights.bin" "$2/engine.bin" && echo built && ! touch "$1/x" 2>/dev/null'
    job = BuildJob(_tool(image), ("sh", "-c", script, "job", InputPath("in"), OutputPath()),
                   {"in": source}, label="test")  # fmt: skip
    outcome = builder.run(job, tmp_path / "out", lambda line: None)
    assert (tmp_path / "out" / "engine.bin").read_bytes() == b"abc"
    assert [f.path for f in outcome.files] == ["engine.bin"]
    assert "built" in outcome.log_text  # streamed from the container into the log file
    assert not containers_with_label(engine), LABEL


def test_a_failing_job_is_one_line_and_leaves_no_container(
    base_image: tuple[DockerClient, str], tmp_path: Path
) -> None:
    engine, image = base_image
    job = BuildJob(_tool(image), ("sh", "-c", "echo 'ERROR: no GPU' >&2; exit 3"), {},
                   explain_failure=lambda text: text.strip().splitlines()[-1])  # fmt: skip
    with pytest.raises(ToolFailedError) as failure:
        ContainerBuilder(image, tmp_path / "logs").run(job, tmp_path / "out", lambda line: None)
    assert "exit status 3" in failure.value.message and "ERROR: no GPU" in failure.value.message
    assert "\n" not in failure.value.message
    assert not containers_with_label(engine)
