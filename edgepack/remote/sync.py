"""Deploy a bundle to a device: verified, resumable, atomic.

Layout under the deploy root::

    releases/<short-id>/           complete, verified releases (never modified once renamed here)
    releases/<short-id>.partial/   a release being uploaded; a rerun resumes it
    current  -> releases/<id>      switched by renaming a new symlink over it
    previous -> releases/<id>      what `edgepack rollback` switches back to
    history                        release names in the order they became current
    .deploy-lock/                  one deploy at a time per root

Every file is checked by sha256 on the device: files already there are kept, files another release
holds are hard-linked from it, a partially uploaded file is resumed after its prefix hash matches,
and nothing becomes ``current`` before every file of the release has been verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from edgepack.bundle import MANIFEST, Manifest
from edgepack.cache import sha256_file
from edgepack.errors import RemoteError
from edgepack.remote.connector import Connector, shell
from edgepack.remote.detect import compatibility_problems
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.hosts import DEFAULT_ROOT
from edgepack.targets import TargetRegistry

RELEASES = "releases"
CURRENT = "current"
PREVIOUS = "previous"
PARTIAL = ".partial"
LOCK = ".deploy-lock"
HISTORY = "history"
SPACE_RESERVE_BYTES = 16 << 20
Action = Literal["keep", "link", "resume", "upload"]
_held_locks: set[str] = set()
"""Tokens of the device locks this process holds right now (to recognise its own stale ones)."""


class DeployProgress(Protocol):
    def phase(self, host: str, text: str) -> None: ...

    def transfer(self, host: str, done: int, total: int) -> None: ...


class SilentProgress:
    def phase(self, host: str, text: str) -> None:
        pass

    def transfer(self, host: str, done: int, total: int) -> None:
        pass


@dataclass(frozen=True)
class DeployOptions:
    root: str = DEFAULT_ROOT
    keep: int = 3
    dry_run: bool = False
    break_lock: bool = False


@dataclass(frozen=True)
class FileStep:
    path: str
    size: int
    sha256: str
    action: Action
    offset: int = 0
    source: str | None = None
    """For "link": the same file in another release."""

    @property
    def bytes_to_send(self) -> int:
        return self.size - self.offset if self.action in ("upload", "resume") else 0


@dataclass
class DeployPlan:
    host: str
    root: str
    release: str
    state: Literal["current", "installed", "partial", "new"]
    """Where the release is now: the current one, complete but not current, partial, absent."""
    steps: list[FileStep]
    strays: list[str]
    current: str | None

    @property
    def final_dir(self) -> str:
        return posixpath.join(self.root, RELEASES, self.release)

    @property
    def partial_dir(self) -> str:
        return self.final_dir + PARTIAL

    @property
    def files_change(self) -> bool:
        return bool(self.strays) or any(s.action != "keep" for s in self.steps)

    @property
    def no_change(self) -> bool:
        return self.state == "current" and not self.files_change

    @property
    def bytes_to_send(self) -> int:
        return sum(step.bytes_to_send for step in self.steps)

    def count(self, action: Action) -> int:
        return sum(1 for step in self.steps if step.action == action)


@dataclass
class DeployReport:
    host: str
    release: str
    bundle_id: str
    status: Literal["no change", "deployed", "switched", "dry run"]
    root: str
    bytes_total: int
    bytes_to_send: int
    bytes_sent: int = 0
    files: dict[str, int] = field(default_factory=dict)
    previous: str | None = None
    pruned: list[str] = field(default_factory=list)
    seconds: float = 0.0
    changes: list[dict[str, Any]] = field(default_factory=list)
    """Every file that is not already in place: path, action, bytes_to_send."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Bundle:
    directory: Path
    manifest: Manifest
    files: list[tuple[str, int, str]]
    """(path, size, sha256) of every payload file plus manifest.json itself."""

    @classmethod
    def of(cls, directory: Path, manifest: Manifest) -> _Bundle:
        records = [(r.path, r.size, r.sha256) for r in manifest.files]
        own = directory / MANIFEST
        records.append((MANIFEST, own.stat().st_size, sha256_file(own)))
        return cls(directory, manifest, records)

    @property
    def bytes_total(self) -> int:
        return sum(size for _, size, _ in self.files)


def deploy(
    connector: Connector,
    bundle_dir: Path,
    manifest: Manifest,
    options: DeployOptions,
    registry: TargetRegistry,
    progress: DeployProgress,
) -> DeployReport:
    """Deploy a verified bundle (``verify_bundle`` has run) to one device."""
    started = time.monotonic()
    host = connector.label
    bundle = _Bundle.of(bundle_dir, manifest)
    progress.phase(host, "gathering facts")
    facts = gather_facts(connector, options.root)
    _refuse_incompatible(manifest, facts, registry)
    if options.dry_run:
        plan = make_plan(connector, bundle, facts.root, progress)
        _check_space(plan, facts)
        return _report(plan, manifest, "dry run", started)
    with device_lock(connector, facts.root, options.break_lock):
        plan = make_plan(connector, bundle, facts.root, progress)
        _check_space(plan, facts)
        if plan.no_change:
            progress.phase(host, "no change")
            return _report(plan, manifest, "no change", started)
        sent = _apply(connector, plan, bundle, progress) if plan.files_change else 0
        status: Literal["deployed", "switched"] = "deployed" if plan.files_change else "switched"
        previous = switch_to(connector, plan.root, plan.release)
        pruned = prune(connector, plan.root, options.keep)
    progress.phase(host, status)
    report = _report(plan, manifest, status, started)
    report.bytes_sent, report.previous, report.pruned = sent, previous, pruned
    return report


def _report(plan: DeployPlan, manifest: Manifest, status: Any, started: float) -> DeployReport:
    actions: tuple[Action, ...] = ("keep", "link", "resume", "upload")
    return DeployReport(
        host=plan.host,
        release=plan.release,
        bundle_id=manifest.bundle_id,
        status=status,
        root=plan.root,
        bytes_total=sum(step.size for step in plan.steps),
        bytes_to_send=plan.bytes_to_send,
        files={action: plan.count(action) for action in actions},
        previous=plan.current,
        seconds=time.monotonic() - started,
        changes=[
            {"path": s.path, "action": s.action, "bytes_to_send": s.bytes_to_send}
            for s in plan.steps
            if s.action != "keep"
        ],
    )


def _refuse_incompatible(manifest: Manifest, facts: DeviceFacts, registry: TargetRegistry) -> None:
    problems = compatibility_problems(manifest, facts, registry)
    if problems:
        raise RemoteError(
            f"{facts.host}: refusing to deploy, nothing was sent: " + "; ".join(problems),
            hint="build the bundle for this device's target (`edgepack targets detect "
            f"{facts.host}` names it)",
        )


def _check_space(plan: DeployPlan, facts: DeviceFacts) -> None:
    needed = plan.bytes_to_send + SPACE_RESERVE_BYTES
    if plan.bytes_to_send and facts.free_bytes < needed:
        raise RemoteError(
            f"{facts.host}: not enough disk under {facts.root}: the release needs "
            f"{needed / 1e6:.1f} MB (payload plus {SPACE_RESERVE_BYTES >> 20} MiB reserve), "
            f"{facts.free_bytes / 1e6:.1f} MB free; nothing was changed",
            hint="free space on the device, lower --keep, or pick another --root",
        )


# --- planning ---------------------------------------------------------------------------------


@dataclass
class _RemoteState:
    current: str | None
    previous: str | None
    releases: dict[str, int]
    """Release directory name (with .partial) → mtime."""
    history: list[str] = field(default_factory=list)

    def recency(self, name: str) -> tuple[int, int]:
        """Sort key: the last time it became current, then its mtime."""
        last = max((i for i, n in enumerate(self.history) if n == name), default=-1)
        return last, self.releases.get(name, 0)

    @property
    def current_release(self) -> str | None:
        return posixpath.basename(self.current) if self.current else None


STATE_SCRIPT = """cd "$1" 2>/dev/null || exit 0
printf 'current=%s\\n' "$(readlink current)"
printf 'previous=%s\\n' "$(readlink previous)"
for d in releases/*; do
  [ -d "$d" ] && printf 'release=%s %s\\n' "$(stat -c %Y "$d")" "${d#releases/}"
done
[ -f history ] && tail -n 200 history | sed 's/^/history=/'
exit 0"""


def read_state(connector: Connector, root: str) -> _RemoteState:
    state = _RemoteState(None, None, {})
    for line in connector.run(shell(STATE_SCRIPT, root)).stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "release":
            mtime, _, name = value.partition(" ")
            state.releases[name] = int(mtime)
        elif key == "history":
            state.history.append(value)
        elif key in ("current", "previous") and value:
            setattr(state, key, value)
    return state


def make_plan(
    connector: Connector, bundle: _Bundle, root: str, progress: DeployProgress
) -> DeployPlan:
    host = connector.label
    release = bundle.manifest.short_id
    state = read_state(connector, root)
    if state.current_release == release and release in state.releases:
        where: Literal["current", "installed", "partial", "new"] = "current"
    elif release in state.releases:
        where = "installed"
    else:
        where = "partial" if release + PARTIAL in state.releases else "new"
    directory = posixpath.join(root, RELEASES, release + (PARTIAL if where == "partial" else ""))
    progress.phase(host, "checking files on the device")
    sizes = connector.file_sizes(directory) if where != "new" else {}
    wanted = {path: (size, digest) for path, size, digest in bundle.files}
    same_size = [p for p, size in sizes.items() if p in wanted and wanted[p][0] == size]
    digests = connector.sha256(directory, same_size)
    elsewhere = _files_in_other_releases(connector, root, state, release)
    steps = []
    for path, size, digest in bundle.files:
        if digests.get(path) == digest:
            steps.append(FileStep(path, size, digest, "keep"))
        elif _resumable(connector, bundle, directory, path, sizes.get(path, 0), size):
            steps.append(FileStep(path, size, digest, "resume", offset=sizes[path]))
        elif digest in elsewhere:
            steps.append(FileStep(path, size, digest, "link", source=elsewhere[digest]))
        else:
            steps.append(FileStep(path, size, digest, "upload"))
    strays = sorted(set(sizes) - set(wanted))
    return DeployPlan(host, root, release, where, steps, strays, state.current_release)


def _resumable(
    connector: Connector, bundle: _Bundle, directory: str, path: str, length: int, size: int
) -> bool:
    """Resume only when the bytes already on the device are the bundle's first bytes."""
    if not 0 < length < size:
        return False
    remote = connector.prefix_sha256(posixpath.join(directory, path), length)
    return remote == _prefix_sha256(bundle.directory / path, length)


def _prefix_sha256(path: Path, length: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        remaining = length
        while remaining > 0 and (chunk := source.read(min(remaining, 1 << 20))):
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _files_in_other_releases(
    connector: Connector, root: str, state: _RemoteState, release: str
) -> dict[str, str]:
    """sha256 → absolute path of a file with that content in a complete release (its manifest)."""
    found: dict[str, str] = {}
    others = [n for n in state.releases if not n.endswith(PARTIAL) and n != release]
    for name in sorted(others, key=state.recency, reverse=True):
        directory = posixpath.join(root, RELEASES, name)
        data = connector.read_bytes(posixpath.join(directory, MANIFEST))
        if data is None:
            continue
        try:
            records = json.loads(data)["files"]
        except (ValueError, KeyError):
            continue
        for record in records:
            found.setdefault(record["sha256"], posixpath.join(directory, record["path"]))
    return found


# --- applying ---------------------------------------------------------------------------------

LINK_SCRIPT = """while [ $# -gt 1 ]; do
  ln -f -- "$1" "$2" 2>/dev/null || cp -f -- "$1" "$2" || exit 1
  shift 2
done"""


def _apply(
    connector: Connector, plan: DeployPlan, bundle: _Bundle, progress: DeployProgress
) -> int:
    host, staging = plan.host, plan.partial_dir
    if plan.state in ("current", "installed"):
        # A complete release whose files no longer match: repair it as a partial one.
        connector.rename(plan.final_dir, staging)
    connector.remove_trees([posixpath.join(staging, path) for path in plan.strays])
    parents = {posixpath.dirname(posixpath.join(staging, step.path)) for step in plan.steps}
    connector.make_dirs(sorted(parents))
    links = [s for s in plan.steps if s.action == "link"]
    if links:
        progress.phase(host, f"linking {len(links)} unchanged files from earlier releases")
        pairs = [arg for s in links for arg in (str(s.source), posixpath.join(staging, s.path))]
        connector.run(shell(LINK_SCRIPT, *pairs))
    sent = _upload(connector, plan, bundle.directory, progress)
    _verify(connector, plan, progress)
    connector.rename(staging, plan.final_dir)
    return sent


def _upload(
    connector: Connector, plan: DeployPlan, bundle_dir: Path, progress: DeployProgress
) -> int:
    total, done = plan.bytes_to_send, 0

    def moved(count: int) -> None:
        nonlocal done
        done += count
        progress.transfer(plan.host, done, total)

    for step in plan.steps:
        if step.bytes_to_send:
            verb = "resuming" if step.action == "resume" else "uploading"
            progress.phase(plan.host, f"{verb} {step.path}")
            remote = posixpath.join(plan.partial_dir, step.path)
            connector.put(bundle_dir / step.path, remote, step.offset, moved)
    return done


def _verify(connector: Connector, plan: DeployPlan, progress: DeployProgress) -> None:
    unverified = [s for s in plan.steps if s.action != "keep"]
    progress.phase(plan.host, f"verifying {len(unverified)} files (sha256 on the device)")
    digests = connector.sha256(plan.partial_dir, [s.path for s in unverified])
    bad = [s.path for s in unverified if digests.get(s.path) != s.sha256]
    if bad:
        connector.remove_trees([posixpath.join(plan.partial_dir, path) for path in bad])
        raise RemoteError(
            f"{plan.host}: sha256 differs on the device after upload for {', '.join(bad)}; "
            "the bad copies were removed and current is unchanged",
            hint="rerun the deploy (it re-sends only those files); if it repeats, check the "
            "device's storage",
        )


def switch_to(connector: Connector, root: str, release: str) -> str | None:
    """Make ``release`` current; the old current becomes previous. Returns the old current."""
    state = read_state(connector, root)
    old = state.current_release
    target = posixpath.join(RELEASES, release)
    if old and old != release:
        connector.switch_symlink(posixpath.join(root, PREVIOUS), posixpath.join(RELEASES, old))
    connector.switch_symlink(posixpath.join(root, CURRENT), target)
    connector.run(shell('printf "%s\\n" "$2" >> "$1"', posixpath.join(root, HISTORY), release))
    return old


def prune(connector: Connector, root: str, keep: int) -> list[str]:
    """Keep the newest ``keep`` releases (current and previous always); drop stale partials."""
    state = read_state(connector, root)
    protected = {
        posixpath.basename(link) for link in (state.current, state.previous) if link is not None
    }
    complete = sorted(
        (n for n in state.releases if not n.endswith(PARTIAL)),
        key=state.recency,
        reverse=True,
    )
    kept = set(complete[: max(keep, 1)]) | protected
    doomed = [n for n in state.releases if n not in kept]
    connector.remove_trees([posixpath.join(root, RELEASES, name) for name in sorted(doomed)])
    return sorted(doomed)


def rollback(
    connector: Connector, root: str, to: str | None = None, break_lock: bool = False
) -> tuple[str | None, str]:
    """Switch current to ``to`` (default: previous). Returns (old current, new current)."""
    facts_root = gather_facts(connector, root).root
    with device_lock(connector, facts_root, break_lock):
        state = read_state(connector, facts_root)
        target = to or (posixpath.basename(state.previous) if state.previous else None)
        if target is None:
            raise RemoteError(
                f"{connector.label}: no previous release under {facts_root} to roll back to",
                hint="deploy another bundle first, or pass --to RELEASE",
            )
        if target not in state.releases:
            known = ", ".join(sorted(n for n in state.releases if not n.endswith(PARTIAL)))
            raise RemoteError(
                f"{connector.label}: release {target} is not on the device (releases: {known})"
            )
        old = switch_to(connector, facts_root, target)
        return old, target


# --- the device lock --------------------------------------------------------------------------


@contextmanager
def device_lock(connector: Connector, root: str, break_lock: bool) -> Iterator[None]:
    """One deploy per deploy root; the owner is recorded so a stale lock can be recognised."""
    lock = posixpath.join(root, LOCK)
    token = uuid.uuid4().hex
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "time": time.time()}
    connector.make_dirs([root])
    if connector.run(["mkdir", "--", lock], check=False).status != 0:
        _take_over_or_refuse(connector, lock, break_lock)
    connector.run(
        shell('cat > "$1"', posixpath.join(lock, "owner")), stdin=json.dumps(owner).encode()
    )
    _held_locks.add(token)
    try:
        yield
    finally:
        _held_locks.discard(token)
        _release_quietly(connector, lock)


def _take_over_or_refuse(connector: Connector, lock: str, break_lock: bool) -> None:
    data = connector.read_bytes(posixpath.join(lock, "owner"))
    owner = _parse_owner(data)
    if not (break_lock or _is_stale(owner)):
        since = time.strftime("%H:%M:%S", time.localtime(float(owner.get("time", 0))))
        raise RemoteError(
            f"{connector.label}: another deploy holds {lock} (from {owner.get('host', '?')}, "
            f"pid {owner.get('pid', '?')}, since {since})",
            hint="wait for it; if that deploy is dead, rerun with --break-lock",
        )
    connector.remove_trees([lock])
    connector.run(["mkdir", "--", lock])


def _parse_owner(data: bytes | None) -> dict[str, Any]:
    try:
        owner = json.loads(data or b"{}")
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _is_stale(owner: dict[str, Any]) -> bool:
    """A lock left by a process of this machine that is gone, or by this process no longer."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if pid == os.getpid():
        return owner.get("token") not in _held_locks
    try:
        os.kill(int(pid or 0), 0)
    except (OSError, ValueError):
        return True
    return False


def _release_quietly(connector: Connector, lock: str) -> None:
    """A lost connection must not hide the error that lost it; the lock is then stale."""
    with suppress(RemoteError):
        connector.remove_trees([lock])
