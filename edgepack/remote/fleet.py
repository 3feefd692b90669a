"""Many devices at once: one thread and one connection per host, one result per host.

A host that fails (unreachable, refused, cut mid-transfer) reports its error; the others carry on,
and because each deploy only switches ``current`` after verifying its own release, no host can be
left pointing at a partial release.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from edgepack.bundle import Manifest
from edgepack.errors import DEBUG_ENV, EdgepackError, ExitCode, RemoteError, debugging
from edgepack.remote.connect import open_connector
from edgepack.remote.hosts import LOCAL, HostSpec, parse_host
from edgepack.remote.sync import DeployOptions, DeployReport, deploy
from edgepack.remote.sync_plan import DeployProgress
from edgepack.targets import TargetRegistry

MAX_PARALLEL = 16
LAST_DEPLOY = "state/last-deploy.json"
T = TypeVar("T")


@dataclass
class HostOutcome:
    host: str
    report: DeployReport | None = None
    error: str | None = None
    hint: str | None = None
    exit_code: int = ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"host": self.host, "ok": self.error is None}
        if self.report:
            data |= self.report.as_dict()
        if self.error:
            data |= {"error": self.error, "hint": self.hint, "exit_code": self.exit_code}
        return data


def on_each_host(
    specs: list[HostSpec], work: Callable[[HostSpec], T]
) -> list[tuple[HostSpec, T | EdgepackError]]:
    """Run ``work`` for every host concurrently; an EdgepackError is that host's result."""

    def guarded(spec: HostSpec) -> T | EdgepackError:
        try:
            return work(spec)
        except EdgepackError as error:
            return error
        except Exception as error:  # one host's failure must not take the others down
            return _host_failure(spec, error)

    with ThreadPoolExecutor(max_workers=min(len(specs), MAX_PARALLEL)) as pool:
        results = list(pool.map(guarded, specs))
    return list(zip(specs, results, strict=True))


def _host_failure(spec: HostSpec, error: Exception) -> EdgepackError:
    """An exception that escaped a host's work: the network's fault, or an edgepack bug."""
    if debugging():
        traceback.print_exception(error)
    if isinstance(error, OSError | EOFError) or type(error).__module__.startswith("paramiko"):
        return RemoteError(
            f"{spec.label}: connection lost: {str(error) or type(error).__name__}",
            hint="rerun the command: transfers resume where they stopped",
        )
    return EdgepackError(
        f"{spec.label}: internal error: {type(error).__name__}: {error}",
        hint=f"rerun with --debug (or {DEBUG_ENV}=1) for the traceback",
    )


def deploy_fleet(
    specs: list[HostSpec],
    bundle_dir: Path,
    manifest: Manifest,
    options: DeployOptions,
    registry: TargetRegistry,
    progress: DeployProgress,
    io_timeout: float = 30.0,
) -> list[HostOutcome]:
    def one(spec: HostSpec) -> DeployReport:
        with open_connector(spec, io_timeout) as connector:
            host_options = replace(options, root=spec.root or options.root)
            return deploy(connector, bundle_dir, manifest, host_options, registry, progress)

    outcomes = []
    for spec, result in on_each_host(specs, one):
        if isinstance(result, EdgepackError):
            outcomes.append(
                HostOutcome(spec.label, None, result.message, result.hint, result.exit_code)
            )
        else:
            outcomes.append(HostOutcome(spec.label, result))
    return outcomes


def remember_deploy(cache_root: Path, specs: list[HostSpec], outcomes: list[HostOutcome]) -> None:
    """Where the newest successful deploy went, for `edgepack bench --remote` without --host."""
    done = [
        {"host": _spec_text(spec), "root": outcome.report.root}
        for spec, outcome in zip(specs, outcomes, strict=True)
        if outcome.report and outcome.report.status != "dry run"
    ]
    if not done:
        return
    path = cache_root / LAST_DEPLOY
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(done, indent=2), encoding="utf-8")
    temporary.replace(path)


def last_deployed(cache_root: Path) -> list[tuple[HostSpec, str]]:
    path = cache_root / LAST_DEPLOY
    if not path.is_file():
        return []
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [(parse_host(entry["host"]), entry["root"]) for entry in entries]


def _spec_text(spec: HostSpec) -> str:
    if spec.kind == LOCAL:
        return LOCAL
    user = f"{spec.user}@" if spec.user else ""
    port = f":{spec.port}" if spec.port else ""
    return f"ssh://{user}{spec.host}{port}"
