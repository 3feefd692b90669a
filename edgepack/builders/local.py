"""``--builder local``: the tool runs on this machine, on the stage's own directories."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from edgepack.builders.common import local_outputs, new_log_path, place_argv, raise_failure
from edgepack.builders.job import BuildJob, BuildOutcome, Log, ToolProbe, ToolSpec
from edgepack.errors import ToolMissingError
from edgepack.process import run_logged

PROBE_TIMEOUT_S = 120


class LocalBuilder:
    name = "local"

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir

    def probe(self, tool: ToolSpec) -> ToolProbe:
        if shutil.which(tool.program) is None:
            return ToolProbe("this machine", present=False)
        if not tool.probe_argv:
            return ToolProbe("this machine", present=True)
        try:
            done = subprocess.run(
                list(tool.probe_argv), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
            )
            output = done.stdout + done.stderr
        except (OSError, subprocess.TimeoutExpired) as error:
            output = str(error)
        return ToolProbe("this machine", True, output, tool.parse_version(output))

    def run(self, job: BuildJob, output_dir: Path, log: Log) -> BuildOutcome:
        if shutil.which(job.tool.program) is None:
            raise ToolMissingError(
                f"{job.tool.program} is not installed here", hint=job.tool.install_hint
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        inputs = {name: str(path) for name, path in job.inputs.items()}
        argv = place_argv(job.argv, inputs, str(output_dir))
        log_path = new_log_path(self.logs_dir, job)
        started = time.perf_counter()
        status = run_logged(argv, log_path, log=log, env=job.env)
        wall = time.perf_counter() - started
        if status != 0:
            raise_failure(job, "this machine", status, log_path)
        return BuildOutcome(self.name, log_path, wall, local_outputs(output_dir))
