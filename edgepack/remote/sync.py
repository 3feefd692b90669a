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
a big file the device has an older copy of is rebuilt from a copy of that with only the blocks
that differ sent (remote/delta.py), and nothing becomes ``current`` before every file of the
release has been verified.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from edgepack.bundle import Manifest
from edgepack.errors import DeviceFullError, RemoteError
from edgepack.remote.connector import Connector, shell
from edgepack.remote.current import check_current
from edgepack.remote.detect import compatibility_problems
from edgepack.remote.device_env import (
    VenvReport,
    ensure_venv,
    glibc_problems,
    venv_problems,
)
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.fingerprints import Record
from edgepack.remote.hosts import DEFAULT_ROOT
from edgepack.remote.layout import (
    under,
)
from edgepack.remote.lock import device_lock
from edgepack.remote.switch import after_switch, doomed_releases, finish, switch_to
from edgepack.remote.sync_plan import (
    ACTIONS,
    DeployPlan,
    DeployProgress,
    FileStep,
    LocalBundle,
    make_plan,
)
from edgepack.remote.verifier import DeviceVerifier, prune_and_restat
from edgepack.targets import TargetRegistry

SPACE_RESERVE_BYTES = 16 << 20


class SilentProgress:
    def phase(self, host: str, text: str) -> None:
        pass

    def transfer(self, host: str, done: int, total: int) -> None:
        pass


class ReleaseStep(Protocol):
    """Work a backend does on the device around a deploy (Edge-LLM builds its engine there).

    ``refusals`` runs before anything is sent (a non-empty list refuses the deploy);
    ``before_switch`` runs after the release is complete and verified and before ``current``
    moves (raising moves nothing); what it returns goes into the report under ``name``."""

    name: str

    def refusals(
        self, connector: Connector, manifest: Manifest, facts: DeviceFacts
    ) -> list[str]: ...

    def before_switch(
        self,
        connector: Connector,
        manifest: Manifest,
        facts: DeviceFacts,
        release_dir: str,
        dry_run: bool,
    ) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class DeployOptions:
    root: str = DEFAULT_ROOT
    keep: int = 3
    dry_run: bool = False
    break_lock: bool = False
    venv: bool = True
    """Install the bundle's wheels (if it carries any) into <root>/venv."""
    steps: tuple[ReleaseStep, ...] = ()
    """The backend's own work on the device (see :class:`ReleaseStep`)."""


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
    venv: VenvReport | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    """What each release step reported (the Edge-LLM engine built on the device)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    bundle = LocalBundle.of(bundle_dir, manifest)
    facts = None
    if not options.dry_run and not options.steps:
        found, facts = _already_current(connector, bundle, options, progress, started)
        if found is not None:
            return found
    if facts is None:
        progress.phase(host, "gathering facts")
        facts = gather_facts(connector, options.root)
    _refuse_incompatible(manifest, facts, registry)
    if options.venv:
        _refuse_unusable_wheels(manifest, facts)
    for step in options.steps:
        _refuse_if(facts, step.refusals(connector, manifest, facts), f"see `edgepack doctor "
                   f"--host {facts.host}` for what the device has")  # fmt: skip
    if options.dry_run:
        plan = make_plan(connector, bundle, facts.root, progress, remember=False)
        _check_space(plan, facts)
        report = _report(plan, manifest, "dry run", started)
        report.venv = _venv(connector, plan, manifest, facts, options, dry_run=True)
        report.steps = _steps(connector, plan, manifest, facts, options, dry_run=True)
        return report
    with device_lock(connector, facts.root, options.break_lock) as lock:
        plan = make_plan(connector, bundle, facts.root, progress)
        _check_space(plan, facts)
        if plan.no_change:
            progress.phase(host, "no change")
            report = _report(plan, manifest, "no change", started)
            report.venv = _venv(connector, plan, manifest, facts, options)
            report.steps = _steps(connector, plan, manifest, facts, options)
            if report.venv is not None:  # the venv link follows the release's own venv
                switch_to(connector, plan.root, plan.release, plan.device)
            return report
        sent, record = _apply(connector, plan, bundle, progress) if plan.files_change else (0, {})
        venv = _venv(connector, plan, manifest, facts, options)
        steps = _steps(connector, plan, manifest, facts, options)
        status: Literal["deployed", "switched"] = "deployed" if plan.files_change else "switched"
        previous = switch_to(connector, plan.root, plan.release, plan.device, plan.replaces)
        after = after_switch(plan.device, plan.release, previous, plan.replaces)
        pruned = doomed_releases(after, options.keep) + ([plan.replaces] if plan.replaces else [])
        if pruned and record:
            record = prune_and_restat(connector, plan.root, plan.release, pruned, record)
        finish(connector, plan.root, plan.release, pruned, lock, record)
    progress.phase(host, status)
    report = _report(plan, manifest, status, started)
    report.bytes_sent, report.previous, report.pruned, report.venv = sent, previous, pruned, venv
    report.steps = steps
    return report


def _already_current(
    connector: Connector,
    bundle: LocalBundle,
    options: DeployOptions,
    progress: DeployProgress,
    started: float,
) -> tuple[DeployReport | None, DeviceFacts | None]:
    """The "no change" report, in one read-only round trip, when the bundle is current as a
    deploy would leave it (then it takes no lock and gathers no facts); else no report, and the
    facts where that round trip brought them."""
    progress.phase(connector.label, "checking the current release")
    check = check_current(connector, bundle, options.root, options.venv)
    if check.current is None:
        return None, check.facts
    progress.phase(connector.label, "no change")
    report = _report(check.current.plan, bundle.manifest, "no change", started)
    report.venv = check.current.venv
    return report, None


def upload_release(
    connector: Connector,
    bundle: LocalBundle,
    root: str,
    progress: DeployProgress,
    break_lock: bool = False,
) -> tuple[str, int]:
    """Put ``bundle`` under ``root``/releases as deploy does (files kept, resumed or uploaded,
    every one verified by sha256 there, renamed into place when complete) without making it
    current; returns its directory there and the bytes sent. The engine builders ship their
    inputs with it."""
    with device_lock(connector, root, break_lock):
        plan = make_plan(connector, bundle, root, progress)
        _check_free_space(connector, plan)
        sent = 0
        if plan.state != "installed" or plan.files_change:
            sent, _ = _apply(connector, plan, bundle, progress)
    return plan.final_dir, sent


def _check_free_space(connector: Connector, plan: DeployPlan) -> None:
    free = connector.free_bytes(plan.root)
    needed = plan.bytes_to_store + SPACE_RESERVE_BYTES
    if plan.bytes_to_store and free < needed:
        raise RemoteError(
            f"{plan.host}: not enough disk under {plan.root}: {needed / 1e6:.1f} MB needed, "
            f"{free / 1e6:.1f} MB free; nothing was changed",
            hint="free space there, or pick another root (ssh:HOST:ROOT)",
        )


def _venv(
    connector: Connector,
    plan: DeployPlan,
    manifest: Manifest,
    facts: DeviceFacts,
    options: DeployOptions,
    dry_run: bool = False,
) -> VenvReport | None:
    """The release's wheels into <root>/venv, before `current` moves (a failure moves nothing)."""
    if not options.venv:
        return None
    return ensure_venv(connector, manifest, facts, plan.final_dir, dry_run=dry_run)


def _steps(
    connector: Connector,
    plan: DeployPlan,
    manifest: Manifest,
    facts: DeviceFacts,
    options: DeployOptions,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Each release step on the complete release, before `current` moves."""
    done = {}
    for step in options.steps:
        reported = step.before_switch(connector, manifest, facts, plan.final_dir, dry_run)
        if reported is not None:
            done[step.name] = reported
    return done


def _report(plan: DeployPlan, manifest: Manifest, status: Any, started: float) -> DeployReport:
    return DeployReport(
        host=plan.host,
        release=plan.release,
        bundle_id=manifest.bundle_id,
        status=status,
        root=plan.root,
        bytes_total=sum(step.size for step in plan.steps),
        bytes_to_send=plan.bytes_to_send,
        files={action: plan.count(action) for action in ACTIONS},
        previous=plan.current,
        seconds=time.monotonic() - started,
        changes=[_change(s) for s in plan.steps if s.action != "keep"],
    )


def _change(step: FileStep) -> dict[str, Any]:
    change: dict[str, Any] = {
        "path": step.path,
        "action": step.action,
        "bytes_to_send": step.bytes_to_send,
    }
    if step.delta is not None:
        change["base"] = step.delta.base.path
        change["ranges"] = len(step.delta.ranges)
    return change


def _refuse_incompatible(manifest: Manifest, facts: DeviceFacts, registry: TargetRegistry) -> None:
    hint = (
        f"build the bundle for this device's target (`edgepack targets detect {facts.host}` "
        "names it)"
    )
    _refuse_if(facts, compatibility_problems(manifest, facts, registry), hint)


def _refuse_unusable_wheels(manifest: Manifest, facts: DeviceFacts) -> None:
    other_python = (
        "rebuild with --device-python for the device's Python, or deploy with --no-venv "
        "(and bench with --remote-python)"
    )
    _refuse_if(facts, venv_problems(manifest, facts), other_python)
    old_glibc = (
        "update the device's OS (JetPack 5 and newer have glibc 2.31+), or build with "
        "--wheelhouse DIR holding wheels for its glibc, or deploy with --no-venv"
    )
    _refuse_if(facts, glibc_problems(manifest, facts), old_glibc)


def _refuse_if(facts: DeviceFacts, problems: list[str], hint: str) -> None:
    if problems:
        raise RemoteError(
            f"{facts.host}: refusing to deploy, nothing was sent: " + "; ".join(problems), hint=hint
        )


def _check_space(plan: DeployPlan, facts: DeviceFacts) -> None:
    needed = plan.bytes_to_store + SPACE_RESERVE_BYTES
    if plan.bytes_to_store and facts.free_bytes < needed:
        raise RemoteError(
            f"{facts.host}: not enough disk under {facts.root}: the release needs "
            f"{needed / 1e6:.1f} MB (payload plus {SPACE_RESERVE_BYTES >> 20} MiB reserve), "
            f"{facts.free_bytes / 1e6:.1f} MB free; nothing was changed",
            hint="free space on the device, lower --keep, or pick another --root",
        )


# --- applying ---------------------------------------------------------------------------------

# $1 the partial release, $2 "fresh" to start it anew; then --rm and paths to remove, --mkdir and
# directories to make, --into and (directory, newline-separated existing files) pairs to hard-link
# into that directory under their own names (two commands a directory, not two a file), --link and
# (existing file, new name) pairs to hard-link singly (both fall back to a copy across file
# systems), --copy and (base, new name) pairs to copy (a delta's start: never a hard link, the base
# is a complete release's), --own and the partial's own files a delta rebuilds in place (a hard
# link among them is made a file of its own first), --check and the paths uploads will write: one
# round trip. Every path after $2 is relative to $1 ("." is $1 itself) and checked to stay inside
# it (no symlink, no `..`) before anything is written or removed; symlinks, FIFOs and devices
# found in a partial release are removed first. It prints each link source's fingerprint just
# before linking it ("linked=SIZE MTIME CTIME INODE SOURCE").
PREPARE_SCRIPT = """dir=$1
[ "$2" = fresh ] && { rm -rf -- "$dir" || exit 1; }
shift 2
mkdir -p -- "$dir" || exit 1
[ -L "$dir" ] && { echo "unsafe release directory $dir: a symlink" >&2; exit 9; }
find "$dir" ! -type f ! -type d -exec rm -f -- {} + || exit 1
inside() {
  case /$1/ in
    //* | *//* | */./* | */../*) echo "unsafe path $1" >&2; exit 9 ;;
  esac
  rest=$1 p=$dir
  while :; do
    p=$p/${rest%%/*}
    [ -L "$p" ] && { echo "unsafe path $1: $p is a symlink" >&2; exit 9; }
    case $rest in */*) rest=${rest#*/} ;; *) return 0 ;; esac
    [ -e "$p" ] && [ ! -d "$p" ] && { echo "unsafe path $1: $p is not a directory" >&2; exit 9; }
  done
}
nl='
'
link_into() {
  rel=; [ "$1" = . ] || rel=$1/
  to=$dir/$rel ifs=$IFS IFS=$nl; set -f
  for s in $2; do inside "$rel${s##*/}"; done
  stat -c 'linked=%s %.9Y %.9Z %i %n' -- $2 2>/dev/null
  if ! ln -f -- $2 "$to" 2>/dev/null; then
    for s in $2; do
      [ "$s" -ef "$to${s##*/}" ] || ln -f -- "$s" "$to${s##*/}" 2>/dev/null ||
        cp -f -- "$s" "$to${s##*/}" || exit 1
    done
  fi
  IFS=$ifs; set +f
}
mode=rm
for a; do
  case "$mode:$a" in
    *:--mkdir) mode=mkdir ;;
    *:--into) mode=into ;;
    *:--link) mode=source ;;
    *:--check) mode=check ;;
    *:--copy) mode=base ;;
    *:--own) mode=own ;;
    rm:*) inside "$a"; rm -rf -- "$dir/$a" || exit 1 ;;
    mkdir:*) inside "$a"; mkdir -p -- "$dir/$a" || exit 1 ;;
    into:*) into=$a; mode=members ;;
    members:*) link_into "$into" "$a"; mode=into ;;
    source:*) source=$a; mode=target ;;
    target:*) inside "$a"
      stat -c 'linked=%s %.9Y %.9Z %i %n' -- "$source" 2>/dev/null
      ln -f -- "$source" "$dir/$a" 2>/dev/null || cp -f -- "$source" "$dir/$a" || exit 1
      mode=source ;;
    base:*) source=$a; mode=copy ;;
    copy:*) inside "$a"
      rm -f -- "$dir/$a" || exit 1
      cp --reflink=auto -- "$source" "$dir/$a" 2>/dev/null || cp -- "$source" "$dir/$a" || exit 1
      chmod a-x -- "$dir/$a" || exit 1
      mode=base ;;
    own:*) inside "$a"
      if [ -n "$(find "$dir/$a" -prune -links +1)" ]; then
        cp -- "$dir/$a" "$dir/$a.own-$$" && mv -f -- "$dir/$a.own-$$" "$dir/$a" || exit 1
      fi ;;
    check:*) inside "$a" ;;
  esac
done"""


def _prepare(connector: Connector, plan: DeployPlan, links: list[FileStep]) -> dict[str, str]:
    """Make the partial release ready for the uploads; returns, of the links whose source was
    fingerprinted, those whose source still had that fingerprint: path → its fingerprint."""
    parents = {posixpath.dirname(step.path) for step in plan.steps} - {""}
    rebuilt = [(s.path, s.delta.base) for s in plan.steps if s.delta is not None]
    grouped, singles = _link_groups(links)
    result = connector.run(
        shell(
            PREPARE_SCRIPT,
            plan.partial_dir,
            "fresh" if plan.replaces else "",
            *plan.strays,
            "--mkdir",
            *sorted(parents),
            "--into",
            *grouped,
            "--link",
            *(arg for s in singles for arg in (str(s.source), s.path)),
            "--copy",
            *(arg for path, base in rebuilt if not base.own for arg in (base.path, path)),
            "--own",
            *(path for path, base in rebuilt if base.own),
            "--check",
            *(s.path for s in plan.steps if s.bytes_to_send),
        )
    )
    before: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        parts = value.split(" ", 4)
        if key == "linked" and len(parts) == 5:
            before[parts[4]] = " ".join(parts[:4])
    return {
        s.path: s.source_fingerprint
        for s in links
        if s.source_fingerprint and s.source_fingerprint == before.get(str(s.source))
    }


def _link_groups(links: list[FileStep]) -> tuple[list[str], list[FileStep]]:
    """The ``--into`` arguments of the links that keep their source's name (each directory they go
    into, "." the top, and its sources), and the other links (renamed, or a name with a newline:
    one command each)."""
    groups: dict[str, list[str]] = {}
    singles: list[FileStep] = []
    for step in links:
        source = str(step.source)
        directory, name = posixpath.split(step.path)
        if posixpath.basename(source) == name and "\n" not in source + step.path:
            groups.setdefault(directory or ".", []).append(source)
        else:
            singles.append(step)
    grouped = [
        arg for directory, sources in groups.items() for arg in (directory, "\n".join(sources))
    ]
    return grouped, singles


def _apply(
    connector: Connector, plan: DeployPlan, bundle: LocalBundle, progress: DeployProgress
) -> tuple[int, Record]:
    """Fill the partial release, verify it on the device, make it durable, rename it into place.
    Returns the bytes sent and the fingerprints of the files it verified."""
    host, staging = plan.host, plan.partial_dir
    links = [s for s in plan.steps if s.action == "link"]
    if links:
        progress.phase(host, f"linking {len(links)} unchanged files")
    unchanged_sources = _prepare(connector, plan, links)
    executable = {r.path for r in bundle.manifest.files if r.executable}
    # Modes change before the hashes: a chmod moves the ctime its fingerprint records.
    in_place = [s.path for s in plan.steps if not s.bytes_to_send and s.path in executable]
    _mark_executables(connector, staging, in_place)
    with DeviceVerifier(connector, plan.root, staging) as verifier:
        verifier.add_links({s.path: (unchanged_sources[s.path], s.sha256) for s in links
                            if s.path in unchanged_sources})  # fmt: skip
        verifier.add([s.path for s in links if s.path not in unchanged_sources])
        sent = _upload(connector, plan, plan.steps, bundle.directory, progress, verifier,
                       executable)  # fmt: skip
        progress.phase(host, f"verifying {verifier.count} files (sha256 on the device)")
        digests, record = verifier.finish(), verifier.entries
    resent, digests_again, record_again = _send_torn_again(
        connector, plan, bundle, progress, digests, executable
    )
    record = {p: e for p, e in record.items() if p not in digests_again} | record_again
    digests, sent = digests | digests_again, sent + resent
    _check_digests(connector, plan, digests)
    # The sha256 check read the page cache: the bytes reach the disk before the name does.
    progress.phase(host, "syncing the release to the device's disk")
    connector.flush([staging])
    connector.rename(staging, plan.final_dir)
    connector.flush([posixpath.dirname(plan.final_dir)])
    return sent, record


def _send_torn_again(
    connector: Connector,
    plan: DeployPlan,
    bundle: LocalBundle,
    progress: DeployProgress,
    digests: dict[str, str],
    executable: set[str],
) -> tuple[int, dict[str, str], Record]:
    """A resumed file whose sha256 differs had a bad prefix before the bytes checked to resume
    it: it is sent again whole, once, and verified again (its step becomes an upload)."""
    torn = [i for i, s in enumerate(plan.steps)
            if s.action == "resume" and digests.get(s.path) != s.sha256]  # fmt: skip
    if not torn:
        return 0, {}, {}
    for i in torn:
        plan.steps[i] = replace(plan.steps[i], action="upload", offset=0)
    again = [plan.steps[i] for i in torn]
    progress.phase(plan.host, f"sending {len(again)} resumed files again whole (sha256 differed)")
    with DeviceVerifier(connector, plan.root, plan.partial_dir) as verifier:
        sent = _upload(connector, plan, again, bundle.directory, progress, verifier, executable)
        return sent, verifier.finish(), verifier.entries


def _mark_executables(connector: Connector, staging: str, paths: list[str]) -> None:
    connector.make_executable([under(staging, path) for path in paths])


def _upload(
    connector: Connector,
    plan: DeployPlan,
    steps: list[FileStep],
    bundle_dir: Path,
    progress: DeployProgress,
    verifier: DeviceVerifier,
    executable: set[str],
) -> int:
    """Send what is missing, largest file first: its hash on the device overlaps the rest."""
    total, done = sum(step.bytes_to_send for step in steps), 0

    def moved(count: int) -> None:
        nonlocal done
        done += count
        progress.transfer(plan.host, done, total)

    for step in sorted(steps, key=_hashing_first, reverse=True):
        if step.bytes_to_send:
            remote = under(plan.partial_dir, step.path)
            if step.delta is not None:
                progress.phase(plan.host, f"rebuilding {step.path} from the device's copy")
                moved(step.delta.hash_bytes)
                connector.write_ranges(
                    bundle_dir / step.path, remote, step.size, step.delta.ranges, moved
                )
            else:
                verb = "resuming" if step.action == "resume" else "uploading"
                progress.phase(plan.host, f"{verb} {step.path}")
                connector.put(bundle_dir / step.path, remote, step.offset, moved)
            _mark_executables(
                connector, plan.partial_dir, [step.path] if step.path in executable else []
            )
            verifier.add([step.path])
    return done


def _hashing_first(step: FileStep) -> int:
    """The order of the writes: the files whose hash on the device takes longest first (a
    resumed or rebuilt file is hashed whole)."""
    whole = step.delta is not None or step.action == "resume"
    return step.size if whole else step.bytes_to_send


def _check_digests(connector: Connector, plan: DeployPlan, digests: dict[str, str]) -> None:
    unverified = [s for s in plan.steps if s.action != "keep"]
    bad = [s.path for s in unverified if digests.get(s.path) != s.sha256]
    if bad:
        connector.remove_trees([under(plan.partial_dir, path) for path in bad])
        full = connector.write_failure(plan.partial_dir, "after upload, sha256 differs")
        if isinstance(full, DeviceFullError):
            raise full
        raise RemoteError(
            f"{plan.host}: sha256 differs on the device after upload for {', '.join(bad)}; "
            "the bad copies were removed and current is unchanged",
            hint="rerun the deploy (it re-sends only those files); if it repeats, check the "
            "device's storage",
        )
