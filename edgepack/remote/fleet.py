"""Many devices at once: one thread and one connection per host, one result per host.

A host that fails (unreachable, refused, cut mid-transfer) reports its error; the others carry on,
and because each deploy only switches ``current`` after verifying its own release, no host can be
left pointing at a partial release.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from edgepack.bundle import Manifest
from edgepack.errors import (
    DEBUG_ENV,
    EdgepackError,
    ExitCode,
    InterruptError,
    RemoteError,
    debugging,
)
from edgepack.remote.connect import open_connector
from edgepack.remote.connector import Connector
from edgepack.remote.hosts import LOCAL, HostSpec, parse_host
from edgepack.remote.sync import DeployOptions, DeployReport, deploy
from edgepack.remote.sync_plan import DeployProgress
from edgepack.targets import TargetRegistry

MAX_PARALLEL = 16
STOP_GRACE_S = 0.5
"""After Ctrl-C, how long the hosts' threads get to notice before the process goes on without
them (their connections are already closed; they are daemon threads)."""
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


class Stopper:
    """The connections in use, so that Ctrl-C can close them all from the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[Connector] = set()
        self.stopped = False

    def track(self, connector: Connector) -> None:
        with self._lock:
            self._live.add(connector)
            if self.stopped:
                connector.abort()

    def forget(self, connector: Connector) -> None:
        with self._lock:
            self._live.discard(connector)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for connector in self._live:
                connector.abort()


def on_each_host(
    specs: list[HostSpec],
    work: Callable[[HostSpec], T],
    on_interrupt: Callable[[], None] | None = None,
) -> list[tuple[HostSpec, T | EdgepackError]]:
    """Run ``work`` for every host concurrently; an EdgepackError is that host's result.

    The hosts run in daemon threads the main thread waits for, so Ctrl-C (or SIGTERM) reaches it
    at once: ``on_interrupt`` stops the work, the threads get a moment, KeyboardInterrupt goes on.
    """
    results: dict[int, T | EdgepackError] = {}
    slots = threading.BoundedSemaphore(MAX_PARALLEL)

    def guarded(index: int, spec: HostSpec) -> None:
        with slots:
            try:
                results[index] = work(spec)
            except EdgepackError as error:
                results[index] = error
            except Exception as error:  # one host's failure must not take the others down
                results[index] = _host_failure(spec, error)

    threads = [
        threading.Thread(target=guarded, args=(i, spec), name=f"edgepack {spec.label}", daemon=True)
        for i, spec in enumerate(specs)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        deadline = time.monotonic() + STOP_GRACE_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        raise
    return [(spec, results[i]) for i, spec in enumerate(specs)]


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
    connect: Callable[[HostSpec, float], Connector] = open_connector,
) -> list[HostOutcome]:
    """Deploy to every host concurrently; ``connect`` opens (or hands over) each connection."""
    stopper = Stopper()
    finished: list[str] = []

    def one(spec: HostSpec) -> DeployReport:
        with connect(spec, io_timeout) as connector:
            stopper.track(connector)
            try:
                host_options = replace(options, root=spec.root or options.root)
                report = deploy(connector, bundle_dir, manifest, host_options, registry, progress)
            finally:
                stopper.forget(connector)
            finished.append(spec.label)
            return report

    try:
        results = on_each_host(specs, one, on_interrupt=stopper.stop)
    except KeyboardInterrupt:
        raise _interrupted(specs, finished) from None
    outcomes = []
    for spec, result in results:
        if isinstance(result, EdgepackError):
            outcomes.append(
                HostOutcome(spec.label, None, result.message, result.hint, result.exit_code)
            )
        else:
            outcomes.append(HostOutcome(spec.label, result))
    return outcomes


def _interrupted(specs: list[HostSpec], finished: list[str]) -> InterruptError:
    stopped = [spec.label for spec in specs if spec.label not in finished]
    done = f"; finished first: {', '.join(finished)}" if finished else ""
    return InterruptError(
        f"deploy interrupted: stopped on {', '.join(stopped)} before switching "
        f"(`current` unchanged there, the partial release kept){done}",
        hint="rerun the same command: the upload resumes where it stopped",
    )


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
