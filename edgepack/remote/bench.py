"""``edgepack bench --remote``: run the deployed release on the device, with telemetry.

The device runs edgepack's own bench (the ORT runner) on ``<root>/current`` with its Python,
while the sampler script records /proc (and nvidia-smi or tegrastats where present); the result
JSON and the logs come back and become one RunResult whose ``location`` is the device. With
``--runner runtime`` the bundle's C++ runtime runs instead (``edgepack.remote.runtime_bench``).
"""

from __future__ import annotations

import hashlib
import posixpath
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgepack.bench.local import BenchOptions
from edgepack.bench.reference import PromptSet
from edgepack.bench.result import RunResult
from edgepack.bundle import MANIFEST, PROMPTS_FILE, Manifest, read_manifest
from edgepack.errors import RemoteError
from edgepack.remote.connector import CommandResult, Connector, shell
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.sync import CURRENT
from edgepack.remote.telemetry import SAMPLER_SCRIPT, summarize

LOGS = ("proc.log", "nvidia-smi.csv", "tegrastats.log")
VENV_PYTHON = "venv/bin/python"


def run_with_telemetry(
    connector: Connector, run_dir: str, argv: list[str], interval_ms: int
) -> tuple[CommandResult, dict[str, str]]:
    """Run ``argv`` on the device with the samplers around it; return its result and the logs."""
    connector.make_dirs([run_dir])
    result = connector.run(
        shell(SAMPLER_SCRIPT, run_dir, str(interval_ms), *argv), timeout=None, check=False
    )
    logs = {}
    for name in LOGS:
        data = connector.read_bytes(posixpath.join(run_dir, name))
        if data:
            logs[name] = data.decode(errors="replace")
    return result, logs


def device_python(connector: Connector, facts: DeviceFacts, explicit: str | None) -> str:
    """--remote-python, else the venv under the deploy root, else the device's python3."""
    if explicit:
        return explicit
    venv = posixpath.join(facts.root, VENV_PYTHON)
    if connector.run(["test", "-x", venv], check=False).status == 0:
        return venv
    if facts.python:
        return facts.python
    raise RemoteError(
        f"{connector.label}: no Python on the device",
        hint="install python3, then deploy a bundle built with --device-python X.Y "
        f"(it creates {venv})",
    )


@dataclass(frozen=True)
class UploadedPrompts:
    """A prompt set of the user's (--prompts), checked here and copied to the device."""

    path: str
    """On the device: ``<root>/prompts/<sha256 prefix>.json``."""
    prompts: PromptSet
    sha256: str


def upload_prompt_set(connector: Connector, facts: DeviceFacts, local: Path) -> UploadedPrompts:
    """--prompts for a run on the device: checked here (a bad set is refused before anything
    runs there), then copied to <root>/prompts/."""
    prompts = PromptSet.load(local)
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    remote = posixpath.join(facts.root, "prompts", digest[:16] + ".json")
    connector.make_dirs([posixpath.dirname(remote)])
    connector.put(local, remote, 0, lambda sent: None)
    return UploadedPrompts(remote, prompts, digest)


def current_release_dir(connector: Connector, facts: DeviceFacts) -> str:
    """The release ``<root>/current`` points at, as a path on the device."""
    release = connector.read_link(posixpath.join(facts.root, CURRENT))
    if release is None:
        raise RemoteError(
            f"{connector.label}: nothing is deployed under {facts.root}",
            hint=f"run `edgepack deploy --host {connector.label}` first",
        )
    return posixpath.join(facts.root, release)


def bench_remote(
    connector: Connector,
    root: str,
    options: BenchOptions,
    python: str | None = None,
    interval_ms: int = 500,
) -> RunResult:
    facts = gather_facts(connector, root)
    release_dir = current_release_dir(connector, facts)
    run_dir = posixpath.join(facts.root, "runs", uuid.uuid4().hex[:12])
    result_path = posixpath.join(run_dir, "result.json")
    argv = [
        device_python(connector, facts, python), "-m", "edgepack", "bench",
        "--bundle", release_dir, "--json-out", result_path,
        "--runs", str(options.runs), "--warmup", str(options.warmup),
        "--batch-size", str(options.batch_size), "--max-new-tokens", str(options.max_new_tokens),
        "--json", "--no-gate",
    ]  # fmt: skip
    if options.prompts_file is not None:
        argv += ["--prompts", upload_prompt_set(connector, facts, options.prompts_file).path]
    done, logs = run_with_telemetry(connector, run_dir, argv, interval_ms)
    if done.status != 0:
        raise RemoteError(
            f"{connector.label}: the bench on the device failed: {done.error_line()}",
            hint="build with --device-python X.Y so deploy installs <root>/venv from the bundle's "
            "wheels, or point --remote-python at a Python with onnxruntime-genai and edgepack",
        )
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "result.json"
        connector.get(result_path, local)
        result = RunResult.load_file(local)
    result.location = connector.label
    decode = result.metrics.decode_tok_s.median
    result.telemetry = summarize(logs, interval_ms, decode)
    result.machine["device_facts"] = facts.model_dump(mode="json")
    return result


RUNNERS = ("python", "runtime")
"""What runs on the device: edgepack's Python ORT runner, or the bundle's C++ runtime."""


def bench_remote_command(
    host: str | None,
    root: str | None,
    python: str | None,
    options: BenchOptions,
    cache_root: Path,
    runner: str = "python",
) -> tuple[RunResult, Manifest, Path]:
    """The device: --host, else where the newest deploy went (its root too)."""
    from edgepack.remote.fleet import last_deployed, open_connector
    from edgepack.remote.hosts import DEFAULT_ROOT, parse_host

    if host:
        spec = parse_host(host)
        device_root = spec.root or root or DEFAULT_ROOT
    else:
        deployed = last_deployed(cache_root)
        if not deployed:
            raise RemoteError("no device given and nothing deployed yet", hint="pass --host HOST")
        spec, device_root = deployed[0]
        device_root = root or device_root
    with open_connector(spec) as connector:
        if runner == "runtime":
            from edgepack.remote.runtime_bench import bench_runtime_remote

            result = bench_runtime_remote(connector, device_root, options)
        else:
            result = bench_remote(connector, device_root, options, python)
        manifest, prompts = fetch_release_lockfile(connector, result, cache_root)
    # The gate judges the answers to the prompts that were asked: the user's set where given.
    return result, manifest, options.prompts_file or prompts


def fetch_release_lockfile(
    connector: Connector, result: RunResult, cache_root: Path
) -> tuple[Manifest, Path]:
    """The benched release's manifest and prompt set, copied here for the host-side quality gate."""
    release_dir = str(result.bundle["dir"])
    local = cache_root / "remote-releases" / str(result.bundle["bundle_id"])[:16]
    local.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, PROMPTS_FILE):
        connector.get(posixpath.join(release_dir, name), local / name)
    return read_manifest(local), local / PROMPTS_FILE
