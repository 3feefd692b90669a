"""Deploy, first half: read the device's releases in one round trip and decide, file by file,
what to keep, hard-link from another release, resume, rebuild from the copy the device has at
that path (a block delta, remote/delta.py) or upload (a plan ``--dry-run`` prints)."""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from edgepack.bundle import MANIFEST, Manifest, check_manifest_paths, path_problem
from edgepack.cache import sha256_file, sha256_range
from edgepack.remote.connector import Connector, shell
from edgepack.remote.delta import DELTA_MIN_BYTES, Base, DeltaStep, deltas
from edgepack.remote.fingerprints import SNIPPET, Listing, read_record, write_record
from edgepack.remote.layout import GENERATION, PARTIAL, RELEASES, is_generation, under

Action = Literal["keep", "link", "resume", "delta", "upload"]
ACTIONS: tuple[Action, ...] = ("keep", "link", "resume", "delta", "upload")
RESUME_CHECK_BYTES = 1 << 20
"""A partial file is resumed where its last MiB matches: hashing the whole prefix on both sides
first cost ~0.4 s of a 100 MB file's restart (the device's sha256sum is the slow side)."""


class DeployProgress(Protocol):
    def phase(self, host: str, text: str) -> None: ...

    def transfer(self, host: str, done: int, total: int) -> None: ...


@dataclass
class LocalBundle:
    directory: Path
    manifest: Manifest
    files: list[tuple[str, int, str]]
    """(path, size, sha256) of every payload file plus manifest.json itself."""

    @classmethod
    def of(cls, directory: Path, manifest: Manifest) -> LocalBundle:
        check_manifest_paths(manifest)
        records = [(r.path, r.size, r.sha256) for r in manifest.files]
        own = directory / MANIFEST
        records.append((MANIFEST, own.stat().st_size, sha256_file(own)))
        return cls(directory, manifest, records)

    @property
    def bytes_total(self) -> int:
        return sum(size for _, size, _ in self.files)


@dataclass(frozen=True)
class FileStep:
    path: str
    size: int
    sha256: str
    action: Action
    offset: int = 0
    source: str | None = None
    """For "link": the same file in another release."""
    source_fingerprint: str | None = None
    """For "link": the source's fingerprint in its release's record, where the record has it
    with this sha256: a source that still has it needs no hashing once linked."""
    delta: DeltaStep | None = None
    """For "delta": the device's copy it is rebuilt from and the ranges sent."""

    @property
    def bytes_to_send(self) -> int:
        if self.delta is not None:
            return self.delta.bytes_to_send
        return self.size - self.offset if self.action in ("upload", "resume") else 0

    @property
    def bytes_to_store(self) -> int:
        """The device's disk it takes (a delta's copy of its base is a whole new file)."""
        return self.size if self.delta is not None else self.bytes_to_send


@dataclass
class DeployPlan:
    host: str
    root: str
    release: str
    """The directory name under releases/ that becomes current."""
    state: Literal["current", "installed", "partial", "new"]
    """Where the release is now: the current one, complete but not current, partial, absent."""
    steps: list[FileStep]
    strays: list[str]
    current: str | None
    device: RemoteState
    """The deploy root as the plan found it."""
    bundle_release: str = ""
    """The bundle's short id (``release`` is it, or a repaired copy ``<id>~<token>``)."""
    replaces: str | None = None
    """A complete copy whose files no longer match: repaired beside it, removed after the switch."""

    @property
    def final_dir(self) -> str:
        return posixpath.join(self.root, RELEASES, self.release)

    @property
    def partial_dir(self) -> str:
        return posixpath.join(self.root, RELEASES, (self.bundle_release or self.release) + PARTIAL)

    @property
    def files_change(self) -> bool:
        return bool(self.strays) or any(s.action != "keep" for s in self.steps)

    @property
    def no_change(self) -> bool:
        return self.state == "current" and not self.files_change

    @property
    def bytes_to_send(self) -> int:
        return sum(step.bytes_to_send for step in self.steps)

    @property
    def bytes_to_store(self) -> int:
        return sum(step.bytes_to_store for step in self.steps)

    def count(self, action: Action) -> int:
        return sum(1 for step in self.steps if step.action == action)


@dataclass
class RemoteState:
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
  [ -d "$d" ] && [ ! -L "$d" ] && printf 'release=%s %s\\n' "$(stat -c %Y "$d")" "${d#releases/}"
done
[ -f history ] && tail -n 200 history | sed 's/^/history=/'
"""

# The files of releases/$2 with their fingerprints and its fingerprint record (see
# remote/fingerprints.py); with $3 "remember", first the device's file clock ("now=").
FILES_SCRIPT = (
    SNIPPET
    + """
[ -d "$1/releases/$2" ] || exit 0
[ "$3" = remember ] && clock "$1"
listing "$1/releases/$2" "$1/.fingerprints/$2"
exit 0"""
)


def read_state(connector: Connector, root: str) -> RemoteState:
    state = RemoteState(None, None, {})
    output = connector.run(shell(STATE_SCRIPT + "exit 0", root), timeout=None).stdout
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key == "release":
            mtime, _, name = value.partition(" ")
            state.releases[name] = int(mtime)
        elif key == "history":
            state.history.append(value)
        elif key in ("current", "previous") and value:
            setattr(state, key, value)
    return state


Where = Literal["current", "installed", "partial", "new"]


def _where(state: RemoteState, release: str) -> tuple[Where, str | None]:
    """Where the bundle's release is on the device, and the directory holding it."""
    copies = [n for n in state.releases if is_generation(n, release)]
    if state.current_release in copies:
        return "current", state.current_release
    if copies:
        return "installed", max(copies, key=state.recency)
    if release + PARTIAL in state.releases:
        return "partial", release + PARTIAL
    return "new", None


def make_plan(
    connector: Connector,
    bundle: LocalBundle,
    root: str,
    progress: DeployProgress,
    token: str = "",
    remember: bool = True,
) -> DeployPlan:
    """What to do per file; a complete copy that no longer matches is repaired beside itself,
    in a fresh partial named ``<id>~<token>`` once complete (``current`` never points at a
    directory being changed). ``remember``: record the sha256s it measured (under the lock)."""
    host = connector.label
    release = bundle.manifest.short_id
    progress.phase(host, "checking files on the device")
    state = read_state(connector, root)
    where, source = _where(state, release)
    complete = where in ("current", "installed")
    # A partial is renamed once complete: a record kept under its name would be left behind.
    sizes, digests = _read_files(connector, root, source, bundle, remember and complete)
    directory = posixpath.join(root, RELEASES, source or release + PARTIAL)
    wanted = {path for path, _, _ in bundle.files}
    elsewhere, at_path = _files_in_other_releases(connector, root, state, release)
    steps = []
    for path, size, digest in bundle.files:
        if digests.get(path) == digest:
            steps.append(FileStep(path, size, digest, "keep"))
        elif not complete and _resumable(
            connector, bundle, directory, path, sizes.get(path, 0), size
        ):
            steps.append(FileStep(path, size, digest, "resume", offset=sizes[path]))
        elif digest in elsewhere:
            where_else, known = elsewhere[digest]
            link = FileStep(path, size, digest, "link", source=where_else, source_fingerprint=known)
            steps.append(link)
        else:
            steps.append(FileStep(path, size, digest, "upload"))
    bases = _Bases(directory, sizes, own=not complete, elsewhere=at_path)
    steps = _with_deltas(connector, bundle, steps, bases, progress)
    strays = sorted(set(sizes) - wanted)
    plan = DeployPlan(host, root, source if complete and source else release, where, steps,
                      strays, state.current_release, state, release)  # fmt: skip
    if complete and source and plan.files_change:
        # Repair: the good files are hard-linked from the broken copy into a fresh partial.
        plan.steps = [
            replace(s, action="link", source=under(directory, s.path)) if s.action == "keep" else s
            for s in steps
        ]
        plan.strays, plan.replaces = [], source
        plan.release = release + GENERATION + (token or uuid.uuid4().hex[:8])
    return plan


def _read_files(
    connector: Connector, root: str, source: str | None, bundle: LocalBundle, remember: bool
) -> tuple[dict[str, int], dict[str, str]]:
    """Sizes of the files of releases/``source``, and the sha256 of those of the bundle's size:
    recorded ones whose fingerprint still matches, the others hashed there (and recorded)."""
    if source is None:
        return {}, {}
    script = shell(FILES_SCRIPT, root, source, "remember" if remember else "")
    listing = Listing.read(connector.run(script, timeout=None).stdout)
    wanted = {path: (size, digest) for path, size, digest in bundle.files}
    digests = listing.trusted(wanted)
    unread = [p for p, (size, _) in wanted.items() if listing.sizes.get(p) == size]
    unread = [p for p in unread if p not in digests]
    digests |= connector.sha256(posixpath.join(root, RELEASES, source), unread)
    entries = listing.record(digests)
    if remember and entries and entries != listing.recorded:
        write_record(connector, root, source, entries)
    return listing.sizes, digests


def _resumable(
    connector: Connector, bundle: LocalBundle, directory: str, path: str, length: int, size: int
) -> bool:
    """Resume where the device's last bytes are the bundle's bytes there: a cut leaves a torn
    end, not a changed middle. The whole file's sha256 after the upload checks the rest (and
    sends a file that fails it again whole: remote/sync.py)."""
    if not 0 < length < size:
        return False
    start = max(0, length - RESUME_CHECK_BYTES)
    remote = connector.range_sha256(posixpath.join(directory, path), start, length - start)
    return remote == sha256_range(bundle.directory / path, start, length - start)


@dataclass(frozen=True)
class _Bases:
    """Where the device may have an older copy of each file, to rebuild it from."""

    directory: str
    """The release the plan read: the partial one (``own``), or a complete one being repaired."""
    sizes: dict[str, int]
    own: bool
    elsewhere: dict[str, str]
    """Path in the bundle → the same path in the most recent other complete release."""

    def base(self, step: FileStep) -> Base | None:
        here, length = under(self.directory, step.path), self.sizes.get(step.path, 0)
        if not self.own and step.path in self.sizes:
            return Base(here)
        # The partial copy's own prefix is what a resume uses already; a copy of the full size
        # is a rebuild cut short (or one spoilt in place): the cheapest base of all.
        mine = self.own and step.action == "upload" and length >= DELTA_MIN_BYTES
        if mine and length == step.size:
            return Base(here, own=True)
        if step.path in self.elsewhere:
            return Base(self.elsewhere[step.path])
        return Base(here, own=True) if mine else None


def _with_deltas(
    connector: Connector,
    bundle: LocalBundle,
    steps: list[FileStep],
    bases: _Bases,
    progress: DeployProgress,
) -> list[FileStep]:
    """Uploads and resumes of big files turned into deltas where that sends fewer bytes."""
    wanted = {}
    for step in steps:
        if step.action in ("upload", "resume") and step.size >= DELTA_MIN_BYTES:
            base = bases.base(step)
            if base is not None:
                wanted[step.path] = (bundle.directory / step.path, step.size, base)
    host = connector.label
    found = deltas(connector, wanted, lambda text: progress.phase(host, text))
    return [
        replace(s, action="delta", offset=0, delta=found[s.path])
        if s.path in found and found[s.path].bytes_to_send < s.bytes_to_send
        else s
        for s in steps
    ]


def _files_in_other_releases(
    connector: Connector, root: str, state: RemoteState, release: str
) -> tuple[dict[str, tuple[str, str | None]], dict[str, str]]:
    """sha256 → absolute path of a file with that content in a complete release (its manifest)
    and that file's fingerprint where the release's record has it with this sha256; and path →
    that path in the most recent complete release that lists it."""
    found: dict[str, tuple[str, str | None]] = {}
    at_path: dict[str, str] = {}
    others = [
        n for n in state.releases if not n.endswith(PARTIAL) and not is_generation(n, release)
    ]
    for name in sorted(others, key=state.recency, reverse=True):
        directory = posixpath.join(root, RELEASES, name)
        data = connector.read_bytes(posixpath.join(directory, MANIFEST))
        if data is None:
            continue
        try:
            records = [(r["sha256"], r["path"]) for r in json.loads(data)["files"]]
        except (ValueError, KeyError, TypeError):
            continue
        recorded = read_record(connector, root, name)
        for digest, path in records:
            # A link is verified by its sha256 after it is made; a path that leaves its release
            # is never followed.
            if isinstance(path, str) and isinstance(digest, str) and path_problem(path) is None:
                stat, known = recorded.get(path, ("", ""))
                fingerprint = stat if known == digest else None
                found.setdefault(digest, (under(directory, path), fingerprint))
                at_path.setdefault(path, under(directory, path))
    return found, at_path
