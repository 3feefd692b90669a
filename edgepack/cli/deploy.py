"""``edgepack deploy`` and ``edgepack rollback``: ship a bundle to devices over SSH."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from edgepack.cli.options import CacheDirOption, JsonOption, TargetsDirOption
from edgepack.cli.output import console, err_console, human_bytes, print_json

if TYPE_CHECKING:
    from rich.progress import TaskID

    from edgepack.bundle import Manifest
    from edgepack.remote.fleet import HostOutcome
    from edgepack.remote.sync import DeployReport, ReleaseStep

HostsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        "-H",
        help="Device: an ~/.ssh/config alias, \\[user@]host[:ROOT], ssh://user@host:port/ROOT, "
        "or local[:DIR]. Repeat for several devices.",
        show_default=False,
    ),
]
RootOption = Annotated[
    str, typer.Option("--root", help="Deploy root on the device (releases/, current).")
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", min=1.0, help="Seconds without progress before a connection counts as lost."
    ),
]
CompressOption = Annotated[
    bool | None,
    typer.Option(
        "--compress/--no-compress",
        help="SSH compression (zlib) for this deploy \\[default: each host's Compression in "
        "~/.ssh/config, off unless set]. Worth it on links slower than the compressor: an int4 "
        "bundle compresses to about 70 %; on gigabit Ethernet it slows the copy down.",
        show_default=False,
    ),
]
BreakLockOption = Annotated[
    bool, typer.Option("--break-lock", help="Take over a deploy lock left by a dead deploy.")
]


def deploy(
    host: HostsOption = None,
    inventory: Annotated[
        Path | None, typer.Option("--inventory", "-i", help="File with one host per line.")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Bundle directory \\[default: the newest build]."),
    ] = None,
    root: RootOption = "~/edgepack",
    keep: Annotated[int, typer.Option("--keep", help="Releases to keep on the device.")] = 3,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be sent; change nothing.")
    ] = False,
    break_lock: BreakLockOption = False,
    venv: Annotated[
        bool,
        typer.Option(
            "--venv/--no-venv",
            help="Install the wheels the bundle carries (build --device-python) into <root>/venv, "
            "offline, before switching `current`.",
        ),
    ] = True,
    timeout: TimeoutOption = 30.0,
    compress: CompressOption = None,
    targets_dir: TargetsDirOption = None,
    cache_dir: CacheDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Deploy a bundle: compatibility and free-space checks first, then a verified, resumable
    upload into releases/<id>.partial, then an atomic switch of `current`.

    Files already on the device (same sha256) are not sent again; a cut transfer resumes where it
    stopped; a big file the device has an older copy of is rebuilt there, only the blocks that
    differ being sent. Several hosts are deployed concurrently; one failing does not stop the
    others.
    """
    from edgepack.errors import BadInputError
    from edgepack.remote.connect import early_connections
    from edgepack.remote.hosts import resolve_hosts, with_compression

    if keep < 1:
        raise BadInputError("--keep must be at least 1 (the current release)")
    specs = with_compression(resolve_hosts(host or [], inventory), compress)
    # The hosts are contacted first (by the entry point, before the command line was parsed, for
    # `edgepack deploy --host H`): the rest of the start-up runs while they answer.
    with early_connections(specs, timeout) as early:
        from edgepack.bundle import latest_bundle, verify_bundle
        from edgepack.cache import HASH_INDEX_FILE, FileHashIndex, default_cache_root
        from edgepack.remote.fleet import deploy_fleet, remember_deploy
        from edgepack.remote.sync import DeployOptions, SilentProgress
        from edgepack.targets import TargetRegistry

        cache_root = cache_dir or default_cache_root()
        bundle_dir = bundle or latest_bundle(cache_root)
        hashes = FileHashIndex(cache_root / HASH_INDEX_FILE)
        manifest = verify_bundle(bundle_dir, hashes)
        hashes.save()
        registry = TargetRegistry.default(targets_dir or [])
        options = DeployOptions(
            root=root, keep=keep, dry_run=dry_run, break_lock=break_lock, venv=venv,
            steps=_release_steps(manifest, cache_root),
        )  # fmt: skip
        bars = nullcontext(SilentProgress()) if json_output else TransferBars()
        with bars as progress:
            outcomes = deploy_fleet(
                specs, bundle_dir, manifest, options, registry, progress, timeout, early.take
            )
    remember_deploy(cache_root, specs, outcomes)
    if json_output:
        print_json([outcome.as_dict() for outcome in outcomes])
    else:
        for outcome in outcomes:
            _print_outcome(outcome, manifest.short_id)
    _exit_with_failures(outcomes)


def _release_steps(manifest: Manifest, cache_root: Path) -> tuple[ReleaseStep, ...]:
    """The backend's work on the device; only Edge-LLM bundles have any (its import is not
    free, and a no-change deploy is meant to take a fraction of a second)."""
    if manifest.recipe.get("backend") != "edgellm":
        return ()
    from edgepack.backends.edgellm.on_device import deploy_steps

    return deploy_steps(manifest, cache_root / "logs")


def _print_host_error(host: str, message: str, hint: str | None) -> None:
    """One host's failure: its error line and its hint line, each unwrapped."""
    err_console.print(
        f"[bold red]{escape(host)}: error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    if hint:
        err_console.print(f"  [dim]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def _print_outcome(outcome: HostOutcome, release: str) -> None:
    if outcome.error:
        _print_host_error(outcome.host, outcome.error, outcome.hint)
        return
    report = outcome.report
    assert report is not None  # no error means a report
    files = ", ".join(f"{count} {action}" for action, count in report.files.items() if count)
    if report.status == "no change":
        console.print(f"[green]{report.host}[/]: no change (release {release} is current)")
        _print_venv(report)
        _print_steps(report)
        return
    verb = {"dry run": "would send", "deployed": "sent", "switched": "sent"}[report.status]
    sent = report.bytes_to_send if report.status == "dry run" else report.bytes_sent
    console.print(
        f"[green]{report.host}[/]: {report.status} release {release} under {report.root} "
        f"({files}); {verb} {human_bytes(sent)} of {human_bytes(report.bytes_total)} "
        f"in {report.seconds:.1f} s"
        + (f"; previous {report.previous}" if report.previous else "")
        + (f"; pruned {', '.join(report.pruned)}" if report.pruned else ""),
        highlight=False,
    )
    _print_venv(report)
    _print_steps(report)
    if report.status == "dry run":
        for change in report.changes:
            console.print(
                f"  {change['action']:7} {change['path']} "
                f"({human_bytes(change['bytes_to_send'])} to send"
                + (f", the rest from {change['base']})" if "base" in change else ")"),
                highlight=False,
            )


def _print_steps(report: DeployReport) -> None:
    engine = report.steps.get("edgellm_engine")
    if engine:
        size = sum(int(f["size"]) for f in engine["files"])
        console.print(
            f"  engine {engine['status']} on the device: {engine['directory']} "
            f"({human_bytes(float(size))}, sha256 computed there)"
        )


def _print_venv(report: DeployReport) -> None:
    if report.venv:
        venv = report.venv
        text = f"  venv {venv.status}: {venv.path} ({venv.wheels} wheels, Python {venv.python})"
        console.print(text, highlight=False)


def _exit_with_failures(outcomes: list[HostOutcome]) -> None:
    failed = [o for o in outcomes if o.error]
    if failed:
        if len(outcomes) > 1:
            err_console.print(f"{len(failed)} of {len(outcomes)} hosts failed")
        raise typer.Exit(failed[0].exit_code)


def rollback(
    host: HostsOption = None,
    inventory: Annotated[
        Path | None, typer.Option("--inventory", "-i", help="File with one host per line.")
    ] = None,
    root: RootOption = "~/edgepack",
    to: Annotated[
        str | None, typer.Option("--to", help="Release to switch to \\[default: previous].")
    ] = None,
    break_lock: BreakLockOption = False,
    timeout: TimeoutOption = 30.0,
    json_output: JsonOption = False,
) -> None:
    """Switch `current` back to the previous release (atomically; running it again undoes it)."""
    from edgepack.errors import EdgepackError
    from edgepack.remote.connect import open_connector
    from edgepack.remote.fleet import on_each_host
    from edgepack.remote.hosts import HostSpec, resolve_hosts
    from edgepack.remote.switch import rollback as roll_back

    def one(spec: HostSpec) -> tuple[str | None, str]:
        with open_connector(spec, timeout) as connector:
            return roll_back(connector, spec.root or root, to, break_lock)

    rows: list[dict[str, Any]] = []
    codes = []
    for spec, result in on_each_host(resolve_hosts(host or [], inventory), one):
        if isinstance(result, EdgepackError):
            rows.append({"host": spec.label, "ok": False, "error": result.message})
            codes.append(result.exit_code)
            _print_host_error(spec.label, result.message, None if json_output else result.hint)
        else:
            rows.append({"host": spec.label, "ok": True, "from": result[0], "to": result[1]})
            if not json_output:
                console.print(f"[green]{spec.label}[/]: current {result[0]} -> {result[1]}")
    if json_output:
        print_json(rows)
    if codes:
        raise typer.Exit(codes[0])


class TransferBars:
    """Rich progress: one bar per host, bytes and rate, the phase as its description."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.fields[host]}", style="bold"),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> TransferBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def _task(self, host: str) -> TaskID:
        with self.lock:
            if host not in self.tasks:
                self.tasks[host] = self.progress.add_task("", total=None, host=host)
            return self.tasks[host]

    def phase(self, host: str, text: str) -> None:
        self.progress.update(self._task(host), description=text)

    def transfer(self, host: str, done: int, total: int) -> None:
        self.progress.update(self._task(host), completed=done, total=total)
