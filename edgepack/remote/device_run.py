"""What every bench on the device shares: the release ``current`` points at, the user's prompt
set copied there, a command run inside the telemetry samplers, and the release's lockfile brought
back for the host-side quality gate."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path

from edgepack.bench.result import RunResult
from edgepack.bundle import MANIFEST, PROMPTS_FILE, Manifest, read_manifest
from edgepack.errors import RemoteError
from edgepack.quality.prompts import PromptSet
from edgepack.remote.connector import CommandResult, Connector, shell
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.layout import CURRENT
from edgepack.remote.telemetry import SAMPLER_SCRIPT

LOGS = ("proc.log", "nvidia-smi.csv", "tegrastats.log")


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


def release_backend(connector: Connector, root: str) -> str | None:
    """The backend of the release ``current`` points at (each backend benches in its own way:
    trtllm's executor runtime is compiled on the host, Edge-LLM runs its own C++ tools)."""
    release = current_release_dir(connector, gather_facts(connector, root))
    data = connector.read_bytes(posixpath.join(release, MANIFEST))
    try:
        return str(Manifest.model_validate_json(data or b"").recipe.get("backend"))
    except ValueError:
        return None
