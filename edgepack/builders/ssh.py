"""``--builder ssh:HOST``: the tool runs on a GPU host reached over SSH.

The inputs are shipped with the deploy machinery (:func:`edgepack.remote.ship.ship_directory`:
verified, resumable, never sent twice) under ``<root>/builds``; the tool runs in a job directory
there through ``connector.shell`` with its output in ``build.log``; the outputs are listed with
their sha256 computed there, then fetched and checked again here (or left there, recorded).
"""

from __future__ import annotations

import posixpath
import time
import uuid
from pathlib import Path

from edgepack.builders.common import new_log_path, place_argv, raise_failure
from edgepack.builders.job import BuildJob, BuildOutcome, Log, OutputFile, ToolProbe, ToolSpec
from edgepack.remote.connect import open_connector
from edgepack.remote.connector import Connector, shell
from edgepack.remote.hosts import DEFAULT_ROOT, HostSpec
from edgepack.remote.ship import fetch_verified, list_remote, resolve_root, ship_directory

BUILDS = "builds"
JOBS = "jobs"
OUTPUT = "out"
LOG = "build.log"
PROBE_SCRIPT = 'command -v "$1" >/dev/null 2>&1 || exit 127; "$@" 2>&1 | head -c 65536'
# $1 the job directory, $2 its output directory, then the tool's argv; the tool's output goes to
# build.log there (the status is the tool's).
RUN_SCRIPT = f"""job=$1; out=$2; shift 2
mkdir -p -- "$out" || exit 125
cd -- "$job" || exit 125
"$@" > {LOG} 2>&1"""


class SshBuilder:
    def __init__(self, spec: HostSpec, logs_dir: Path, root: str | None = None) -> None:
        self.spec = spec
        self.logs_dir = logs_dir
        self.root = posixpath.join(spec.root or root or DEFAULT_ROOT, BUILDS)

    @property
    def name(self) -> str:
        return f"ssh:{self.spec.label}"

    def probe(self, tool: ToolSpec) -> ToolProbe:
        with open_connector(self.spec) as connector:
            return probe_over(connector, tool)

    def run(self, job: BuildJob, output_dir: Path, log: Log) -> BuildOutcome:
        with open_connector(self.spec) as connector:
            return self._run(connector, job, output_dir, log)

    def _run(self, connector: Connector, job: BuildJob, output_dir: Path, log: Log) -> BuildOutcome:
        root = resolve_root(connector, self.root)
        inputs, sent = {}, 0
        for name, directory in job.inputs.items():
            log(f"shipping {name} to {connector.label}:{root}")
            shipped = ship_directory(connector, directory, root, name)
            inputs[name], sent = shipped.remote_dir, sent + shipped.bytes_sent
        job_dir = posixpath.join(root, JOBS, f"{job.label}-{uuid.uuid4().hex[:12]}")
        out_dir = posixpath.join(job_dir, OUTPUT)
        argv = place_argv(job.argv, inputs, out_dir)
        log(f"running on {connector.label}: {' '.join(argv)}")
        started = time.perf_counter()
        env = [f"{key}={value}" for key, value in job.env.items()]
        command = ["env", *env, *argv] if env else argv
        done = connector.run(
            shell(RUN_SCRIPT, job_dir, out_dir, *command), check=False, timeout=None
        )
        wall = time.perf_counter() - started
        log_path = new_log_path(self.logs_dir, job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if not _fetch_log(connector, posixpath.join(job_dir, LOG), log_path):
            log_path.write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.status != 0:
            raise_failure(job, connector.label, done.status, log_path)
        files = list_remote(connector, out_dir)
        if job.fetch_outputs:
            output_dir.mkdir(parents=True, exist_ok=True)
            fetch_verified(connector, out_dir, files, output_dir)
            connector.remove_trees([job_dir])
        outputs = [OutputFile(f.path, f.size, f.sha256) for f in files]
        remote = None if job.fetch_outputs else out_dir
        return BuildOutcome(self.name, log_path, wall, outputs, remote, sent)


def probe_over(connector: Connector, tool: ToolSpec) -> ToolProbe:
    """The tool's probe on a host; where the program is missing, the fallback probe's output."""
    argv = tool.probe_argv or (tool.program,)
    done = connector.run(shell(PROBE_SCRIPT, *argv), check=False, timeout=300)
    if done.status == 127:
        output = ""
        if tool.absent_probe_argv:
            fallback = connector.run(shell(PROBE_SCRIPT, *tool.absent_probe_argv), check=False)
            output = fallback.stdout if fallback.status != 127 else ""
        return ToolProbe(connector.label, False, output, tool.parse_version(output))
    return ToolProbe(connector.label, True, done.stdout, tool.parse_version(done.stdout))


def _fetch_log(connector: Connector, remote: str, local: Path) -> bool:
    data = connector.read_bytes(remote)
    if data is None:
        return False
    local.write_bytes(data)
    return True
