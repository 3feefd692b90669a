"""``edgepack bench --remote``: run the deployed release on the device, with telemetry.

The device runs edgepack's own bench (the ORT runner) on ``<root>/current`` with its Python,
while the sampler script records /proc (and nvidia-smi or tegrastats where present); the result
JSON and the logs come back and become one RunResult whose ``location`` is the device. With
``--runner runtime`` the bundle's C++ runtime runs instead (``edgepack.remote.runtime_bench``);
without ``--runner``, the one that can run there (``edgepack.remote.runner_pick``).
"""

from __future__ import annotations

import posixpath
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.bench.local import BenchOptions
from edgepack.bench.result import RunResult
from edgepack.bench.state import STATE_DIR_ENV
from edgepack.bundle import Manifest
from edgepack.errors import RemoteError
from edgepack.remote.connector import Connector
from edgepack.remote.device_run import (
    current_release_dir,
    fetch_release_lockfile,
    release_backend,
    run_with_telemetry,
    upload_prompt_set,
)
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.runner_pick import VENV_PYTHON, RunnerChoice, pick_runner, python_candidate
from edgepack.remote.telemetry import summarize

if TYPE_CHECKING:
    from edgepack.remote.hosts import HostSpec


def device_python(connector: Connector, facts: DeviceFacts, explicit: str | None) -> str:
    """--remote-python, else the venv under the deploy root, else the device's python3."""
    python = python_candidate(connector, facts, explicit)
    if python:
        return python
    venv = posixpath.join(facts.root, VENV_PYTHON)
    raise RemoteError(
        f"{connector.label}: no Python on the device",
        hint="install python3, then deploy a bundle built with --device-python X.Y "
        f"(it creates {venv})",
    )


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
    state = f"{STATE_DIR_ENV}={posixpath.join(facts.root, 'state')}"
    argv = [
        "env", state, device_python(connector, facts, python), "-m", "edgepack", "bench",
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
    runner: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[RunResult, Manifest, Path]:
    """The device: --host, else where the newest deploy went (its root too). ``runner`` None:
    the one that can run there (``say`` hears which, and why)."""
    from edgepack.remote.connect import open_connector

    spec, device_root = _device(host, root, cache_root)
    with open_connector(spec) as connector:
        backend = release_backend(connector, device_root)
        if backend == "trtllm":
            from edgepack.backends.trtllm.bench import bench_trtllm_remote

            result = bench_trtllm_remote(connector, device_root, options, cache_root)
        elif backend == "edgellm" and runner == "runtime":
            from edgepack.backends.edgellm.runtime_run import bench_edgellm_runtime

            result = bench_edgellm_runtime(connector, device_root, options, cache_root)
        elif backend == "edgellm":
            from edgepack.backends.edgellm.remote_bench import bench_edgellm_remote

            result = bench_edgellm_remote(connector, device_root, options, cache_root)
        else:
            result = _bench_with_runner(connector, device_root, options, python, runner, say)
        manifest, prompts = fetch_release_lockfile(connector, result, cache_root)
    # The gate judges the answers to the prompts that were asked: the user's set where given.
    return result, manifest, options.prompts_file or prompts


def _device(host: str | None, root: str | None, cache_root: Path) -> tuple[HostSpec, str]:
    """--host (and its root), else the newest deploy's host and root."""
    from edgepack.remote.fleet import last_deployed
    from edgepack.remote.hosts import DEFAULT_ROOT, parse_host

    if host:
        spec = parse_host(host)
        return spec, spec.root or root or DEFAULT_ROOT
    deployed = last_deployed(cache_root)
    if not deployed:
        raise RemoteError("no device given and nothing deployed yet", hint="pass --host HOST")
    spec, device_root = deployed[0]
    return spec, root or device_root


def _bench_with_runner(
    connector: Connector,
    root: str,
    options: BenchOptions,
    python: str | None,
    runner: str | None,
    say: Callable[[str], None],
) -> RunResult:
    """Bench with --runner, or with the runner that can run on the device; the result says
    which ran and why (``machine.runner``, ``machine.runner_choice``)."""
    if runner is None:
        choice = pick_runner(connector, gather_facts(connector, root), python)
    else:
        choice = RunnerChoice(runner, "asked for", python)
    say(choice.line(connector.label))
    if choice.runner == "runtime":
        from edgepack.remote.runtime_bench import bench_runtime_remote

        result = bench_runtime_remote(connector, root, options)
    else:
        result = bench_remote(connector, root, options, choice.python)
    result.machine["runner"] = choice.runner
    result.machine["runner_choice"] = choice.reason
    return result
