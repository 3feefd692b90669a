"""``--builder container``: the tool runs in the toolchain's release image on this machine,
through the container engine's API, with the host's GPUs passed through. The inputs are mounted
read-only, the stage's output directory read-write."""

from __future__ import annotations

import posixpath
import time
from pathlib import Path

from edgepack.builders.common import local_outputs, new_log_path, place_argv, raise_failure
from edgepack.builders.job import BuildJob, BuildOutcome, Log, ToolProbe, ToolSpec
from edgepack.errors import ToolMissingError

INPUTS = "/edgepack/inputs"
OUTPUT = "/edgepack/output"
PROBE = "/edgepack/probe"


class ContainerBuilder:
    def __init__(self, image: str, logs_dir: Path) -> None:
        self.image = image
        self.logs_dir = logs_dir

    @property
    def name(self) -> str:
        return f"container:{self.image}"

    def probe(self, tool: ToolSpec) -> ToolProbe:
        from edgepack.container import api_client, api_has_image, run_in_container

        client = api_client()
        where = f"the container image {self.image}"
        if not api_has_image(client, self.image):
            return ToolProbe(where, present=False)
        log_path = new_log_path(self.logs_dir, _probe_job(tool))
        argv = ["sh", "-c", 'command -v "$1" >/dev/null || exit 127; "$@"', "probe"]
        status = run_in_container(
            client, self.image, [*argv, *(tool.probe_argv or (tool.program,))],
            mounts={}, log_path=log_path, purpose="probe",
        )  # fmt: skip
        output = log_path.read_text(encoding="utf-8", errors="replace")
        return ToolProbe(where, status != 127, output, tool.parse_version(output))

    def run(self, job: BuildJob, output_dir: Path, log: Log) -> BuildOutcome:
        from edgepack.container import api_client, api_has_image, run_in_container

        client = api_client()
        if not api_has_image(client, self.image):
            raise ToolMissingError(
                f"the container image {self.image} is not on this machine's engine",
                hint=f"docker pull {self.image}",
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        inside = {name: posixpath.join(INPUTS, name) for name in job.inputs}
        mounts = {inside[name]: (str(path.resolve()), True) for name, path in job.inputs.items()}
        mounts[OUTPUT] = (str(output_dir.resolve()), False)
        argv = place_argv(job.argv, inside, OUTPUT)
        log_path = new_log_path(self.logs_dir, job)
        started = time.perf_counter()
        status = run_in_container(
            client, self.image, argv, mounts=mounts, log_path=log_path, gpus=job.tool.gpus,
            env=dict(job.env), log=log,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if status != 0:
            raise_failure(job, self.name, status, log_path)
        return BuildOutcome(self.name, log_path, wall, local_outputs(output_dir))


def _probe_job(tool: ToolSpec) -> BuildJob:
    return BuildJob(tool, (), {}, label="probe")
