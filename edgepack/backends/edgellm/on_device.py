"""Deploying an Edge-LLM bundle: the version lock before a byte moves, the engine built there.

An Edge-LLM bundle carries the host half (the checked ONNX export, ``engine/llm``). ``deploy``
ships it like any bundle (verified, resumable); then, before ``current`` moves, ``llm_build``
runs on the device on the release's ``engine/llm`` with the plan's limits and
``EDGELLM_PLUGIN_PATH``. The engine lands in ``<root>/engines/<key>``, keyed by the bundle and
the device's Edge-LLM, TensorRT, CUDA, L4T and SM: it never leaves the device, a re-deploy of the
same bundle reuses it after its files verify (sha256 computed there), and the same bundle on
another device builds that device's own. ``engine.json`` there records the engine's files with
their size and sha256 as computed on the device, the device's versions and ``llm_build``'s log.
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.backends.edgellm.device import (
    ENGINE_FILE,
    INSTALL_HINT,
    PROBE_SCRIPT,
    DeviceEdgeLlm,
    device_problems,
    explain_llm_build,
    parse_llm_build_log,
    parse_probe,
    read_record,
)
from edgepack.backends.edgellm.toolchain import DEVICE_ENGINE_RECORD, EDGELLM_VERSION, LLM_DIR
from edgepack.cache import content_key
from edgepack.errors import RemoteError, ToolFailedError
from edgepack.remote.connector import Connector, shell
from edgepack.remote.ship import list_remote

if TYPE_CHECKING:
    from edgepack.bundle import Manifest
    from edgepack.remote.facts import DeviceFacts

BACKEND = "edgellm"
ENGINES = "engines"
ENGINE_RECORD = "engine.json"
BUILD_LOG = "llm_build.log"
# $1 log, $2 output dir, then env assignments and the argv; the tool's status is the script's.
BUILD_SCRIPT = """log=$1; out=$2; shift 2
rm -rf -- "$out" && mkdir -p -- "$out" || exit 125
"$@" > "$log" 2>&1"""


@dataclass
class EngineReport:
    status: str
    """``built`` or ``reused`` (or ``would build`` for a dry run)."""
    directory: str
    files: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    device: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_edgellm(manifest: Manifest) -> bool:
    return manifest.recipe.get("backend") == BACKEND


def probe(connector: Connector) -> DeviceEdgeLlm:
    return parse_probe(connector.run(shell(PROBE_SCRIPT), check=False).stdout)


def install_hint(manifest: Manifest) -> str:
    toolchain = manifest.plan.get("toolchain") or {}
    return INSTALL_HINT.format(
        version=manifest.tools.get("tensorrt-edgellm", EDGELLM_VERSION),
        target=toolchain.get("embedded_target") or manifest.target.get("embedded_target") or "auto",
        cuda=toolchain.get("cuda") or "<the device's CUDA>",
    )


def preflight(
    connector: Connector, manifest: Manifest, facts: DeviceFacts
) -> tuple[DeviceEdgeLlm, list[str]]:
    """What the device has of Edge-LLM, and why it cannot build this bundle's engine."""
    found = probe(connector)
    problems = device_problems(
        manifest.tools.get("tensorrt-edgellm"), found, facts.host, install_hint(manifest)
    )
    needed = float(manifest.plan.get("memory", {}).get("build_host_ram_bytes", 0.0))
    free = facts.memory_available_bytes
    if free is not None and needed > free:
        problems.append(
            f"building the engine on {facts.host} needs about {needed / 1e9:.1f} GB of memory "
            f"(3-4x the parameter bytes) but it has {free / 1e9:.1f} GB free; stop other work on "
            "the device, or build a smaller model or precision"
        )
    return found, problems


def fingerprint(facts: DeviceFacts, found: DeviceEdgeLlm) -> dict[str, Any]:
    """What makes an engine valid on a device: whose it is and what built it."""
    return {
        "host": facts.hostname or facts.host,
        "device_model": facts.device_model,
        "gpu": facts.gpu.model_dump() if facts.gpu else None,
        "l4t": facts.l4t,
        "cuda": facts.cuda,
        "tensorrt": facts.tensorrt,
        "edgellm": found.version,
    }


def engine_dir(root: str, manifest: Manifest, device: dict[str, Any]) -> str:
    key = content_key(
        {"bundle": manifest.bundle_id, "device": device, "limits": manifest.recipe.get("limits")}
    )[:16]
    return posixpath.join(root, ENGINES, key)


def llm_build_argv(manifest: Manifest, found: DeviceEdgeLlm, release: str, out: str) -> list[str]:
    limits = manifest.recipe.get("limits", {})
    onnx = posixpath.join(release, manifest.engine_dir, LLM_DIR)
    return [
        "env",
        f"EDGELLM_PLUGIN_PATH={found.plugin}",
        found.tools["llm_build"],
        "--onnxDir",
        onnx,
        "--engineDir",
        out,
        "--maxBatchSize",
        str(limits.get("max_batch_size", 1)),
        "--maxInputLen",
        str(limits.get("max_input_len", 1024)),
        "--maxKVCacheCapacity",
        str(limits.get("max_seq_len", 2048)),
    ]


def read_engine_record(connector: Connector, directory: str) -> dict[str, Any] | None:
    return read_record(connector, directory, ENGINE_RECORD)


def _verified(connector: Connector, directory: str, record: dict[str, Any]) -> bool:
    """The engine's files hash there as they did when it was built."""
    recorded = {f["path"]: (f["size"], f["sha256"]) for f in record.get("files", [])}
    if ENGINE_FILE not in recorded:
        return False
    found = {f.path: (f.size, f.sha256) for f in list_remote(connector, directory)}
    return all(found.get(path) == value for path, value in recorded.items())


def ensure_engine(
    connector: Connector,
    manifest: Manifest,
    facts: DeviceFacts,
    found: DeviceEdgeLlm,
    release_dir: str,
    logs_dir: Path,
    dry_run: bool = False,
) -> EngineReport:
    """The device's engine for this bundle: reused when it verifies, else built now."""
    device = fingerprint(facts, found)
    directory = engine_dir(facts.root, manifest, device)
    record = read_engine_record(connector, directory)
    if record is not None and _verified(connector, directory, record):
        return EngineReport("reused", directory, record["files"], record["wall_s"], device)
    if dry_run:
        return EngineReport("would build", directory, device=device)
    adopted = _adopt_build_time_engine(connector, manifest, release_dir, device, directory)
    if adopted is not None:
        return adopted
    partial = directory + ".partial"
    connector.make_dirs([posixpath.dirname(directory)])
    log = partial + ".log"
    argv = llm_build_argv(manifest, found, release_dir, partial)
    started = time.perf_counter()
    done = connector.run(shell(BUILD_SCRIPT, log, partial, *argv), check=False, timeout=None)
    wall = time.perf_counter() - started
    text = (connector.read_bytes(log) or (done.stdout + done.stderr).encode()).decode(
        errors="replace"
    )
    local_log = logs_dir / f"llm_build-{facts.host}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    local_log.parent.mkdir(parents=True, exist_ok=True)
    local_log.write_text(text, encoding="utf-8")
    if done.status != 0:
        raise ToolFailedError(
            f"llm_build failed on {facts.host} (exit status {done.status}): "
            f"{explain_llm_build(text)}; nothing was switched",
            hint=f"the whole log: {local_log}",
        )
    files = [f.model_dump() for f in list_remote(connector, partial)]
    if ENGINE_FILE not in {f["path"] for f in files}:
        raise RemoteError(
            f"llm_build on {facts.host} exited 0 but wrote no {ENGINE_FILE}",
            hint=f"the whole log: {local_log}",
        )
    record = {
        "bundle_id": manifest.bundle_id,
        "device": device,
        "edgellm_probe": found.record(),
        "llm_build": {"argv": argv, **parse_llm_build_log(text)},
        "files": files,
        "wall_s": wall,
        "built_at": time.time(),
    }
    connector.run(
        shell('printf %s "$1" > "$2"', json.dumps(record), posixpath.join(partial, ENGINE_RECORD))
    )
    connector.remove_trees([directory])
    connector.rename(partial, directory)
    return EngineReport("built", directory, files, wall, device)


def _adopt_build_time_engine(
    connector: Connector,
    manifest: Manifest,
    release_dir: str,
    device: dict[str, Any],
    directory: str,
) -> EngineReport | None:
    """The engine ``build --host`` made on this very device (same versions), where it still
    verifies: hard-linked into place instead of built again. Another device's is never used."""
    path = posixpath.join(release_dir, manifest.engine_dir, DEVICE_ENGINE_RECORD)
    data = connector.read_bytes(path)
    if data is None:
        return None
    built = json.loads(data)
    remote = built.get("remote_dir")
    if built.get("device") != device or not remote or not _verified(connector, remote, built):
        return None
    partial = directory + ".partial"
    connector.make_dirs([posixpath.dirname(directory)])
    connector.run(shell('rm -rf -- "$2" && cp -al -- "$1" "$2"', remote, partial))
    record = {
        "bundle_id": manifest.bundle_id,
        "device": device,
        "files": built["files"],
        "wall_s": built.get("wall_s", 0.0),
        "adopted_from": remote,
    }
    connector.run(
        shell('printf %s "$1" > "$2"', json.dumps(record), posixpath.join(partial, ENGINE_RECORD))
    )
    connector.remove_trees([directory])
    connector.rename(partial, directory)
    return EngineReport("adopted", directory, built["files"], record["wall_s"], device)


class EdgeLlmDeployStep:
    """The release step of an Edge-LLM bundle (``edgepack.remote.sync.ReleaseStep``)."""

    name = "edgellm_engine"

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self.found: dict[str, DeviceEdgeLlm] = {}

    def refusals(self, connector: Connector, manifest: Manifest, facts: DeviceFacts) -> list[str]:
        found, problems = preflight(connector, manifest, facts)
        self.found[facts.host] = found
        return problems

    def found_on(self, connector: Connector, facts: DeviceFacts) -> DeviceEdgeLlm:
        if facts.host not in self.found:
            self.found[facts.host] = probe(connector)
        return self.found[facts.host]

    def before_switch(
        self,
        connector: Connector,
        manifest: Manifest,
        facts: DeviceFacts,
        release_dir: str,
        dry_run: bool,
    ) -> dict[str, Any] | None:
        found = self.found_on(connector, facts)
        report = ensure_engine(
            connector, manifest, facts, found, release_dir, self.logs_dir, dry_run
        )
        return report.as_dict()


class EdgeLlmRuntimeStep:
    """After the engine: the bundle's C++ runtime compiled on the device (``runtime``)."""

    name = "edgellm_runtime"

    def __init__(self, engine: EdgeLlmDeployStep) -> None:
        self.engine = engine

    def refusals(self, connector: Connector, manifest: Manifest, facts: DeviceFacts) -> list[str]:
        from edgepack.backends.edgellm.runtime import runtime_refusals

        found = self.engine.found_on(connector, facts)
        return runtime_refusals(connector, manifest, found, facts.host)

    def before_switch(
        self,
        connector: Connector,
        manifest: Manifest,
        facts: DeviceFacts,
        release_dir: str,
        dry_run: bool,
    ) -> dict[str, Any] | None:
        from edgepack.backends.edgellm.runtime import ensure_runtime

        found = self.engine.found_on(connector, facts)
        device = fingerprint(facts, found)
        return ensure_runtime(
            connector, manifest, facts.root, device, found, release_dir, self.engine.logs_dir,
            dry_run,
        )  # fmt: skip


def deploy_steps(
    manifest: Manifest, logs_dir: Path
) -> tuple[EdgeLlmDeployStep | EdgeLlmRuntimeStep, ...]:
    if not is_edgellm(manifest):
        return ()
    engine = EdgeLlmDeployStep(logs_dir)
    return engine, EdgeLlmRuntimeStep(engine)
