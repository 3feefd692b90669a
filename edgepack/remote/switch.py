"""Deploy, last step: switch ``current`` (with ``previous`` and the venv link) atomically by
renaming new symlinks over the old ones, make it durable, record the history and prune what no
kept release needs; and ``rollback``, the same switch back to an earlier release."""

from __future__ import annotations

import posixpath
import time
import uuid

from edgepack.errors import RemoteError
from edgepack.remote.connector import DEFAULT_TIMEOUT_S, Connector, shell
from edgepack.remote.device_env import (
    PRUNE_VENVS,
    VENV_LINK,
)
from edgepack.remote.facts import gather_facts
from edgepack.remote.fingerprints import SNIPPET, Record, record_text
from edgepack.remote.layout import (
    CURRENT,
    GENERATION,
    PARTIAL,
    PREVIOUS,
    RELEASES,
)
from edgepack.remote.lock import DeviceLock, device_lock
from edgepack.remote.sync_plan import (
    RemoteState,
    read_state,
)

# Makes the new links under temporary names ($3: "" when previous stays as it is); prints "venv"
# when the release names a venv (its sidecar link), whose link then switches with current.
LINKS_SCRIPT = """cd "$1" || exit 1
[ -z "$3" ] || ln -sfn -- "releases/$3" "previous.tmp-$4" || exit 1
if venv=$(readlink "releases/$2.venv" 2>/dev/null); then
  ln -sfn -- "${venv#../}" "venv.tmp-$4" || exit 1
  echo venv
fi
ln -sfn -- "releases/$2" "current.tmp-$4"
"""

# Makes the switch durable, records it in the history (and with $3 "record", stdin as the
# release's fingerprint record, $4 a token), then removes what is no longer wanted:
# releases with their venv sidecars and fingerprint records, the venvs no kept release names, the
# lock last.
FINISH_SCRIPT = (
    SNIPPET
    + """
sync -- "$1" 2>/dev/null || sync
printf '%s\\n' "$2" >> "$1/history"
[ "$3" = record ] && write_record "$1" "$2" "$4"
root=$1
shift 4
for doomed; do rm -rf -- "$doomed.venv" "$doomed" "$root/.fingerprints/${doomed##*/}"; done
set -- "$root"
"""
    + PRUNE_VENVS
)


def switch_to(
    connector: Connector,
    root: str,
    release: str,
    state: RemoteState | None = None,
    replacing: str | None = None,
) -> str | None:
    """Make ``release`` current; the old current becomes previous (unless it is ``replacing``,
    a broken copy of the same release). Returns the old current.

    The history entry is written by ``finish`` (pass it the lock and what to prune).
    """
    state = state or read_state(connector, root)
    old = state.current_release
    token = uuid.uuid4().hex[:8]
    previous = old if old and old != release and old != replacing else ""
    made = connector.run(shell(LINKS_SCRIPT, root, release, previous, token)).stdout.split()
    names = ([PREVIOUS] if previous else []) + ([VENV_LINK] if "venv" in made else []) + [CURRENT]
    links = [posixpath.join(root, name) for name in names]
    try:
        for link in links:
            connector.rename(f"{link}.tmp-{token}", link)
    except BaseException:
        temporary = [f"{link}.tmp-{token}" for link in links]
        connector.execute(["rm", "-f", "--", *temporary], None, DEFAULT_TIMEOUT_S)
        raise
    return old


def after_switch(
    state: RemoteState, release: str, old: str | None, replacing: str | None = None
) -> RemoteState:
    """The deploy root's state once ``release`` became current (without asking the device)."""
    renamed = release.partition(GENERATION)[0] + PARTIAL  # the partial became ``release``
    releases = {n: t for n, t in state.releases.items() if n not in (replacing, renamed)}
    releases[release] = int(time.time())
    moved = old is not None and old not in (release, replacing)
    previous = posixpath.join(RELEASES, old) if old and moved else state.previous
    history = [*state.history, release]
    return RemoteState(posixpath.join(RELEASES, release), previous, releases, history)


def doomed_releases(state: RemoteState, keep: int) -> list[str]:
    """Beyond the newest ``keep`` releases (current and previous are always kept); partials."""
    protected = {
        posixpath.basename(link) for link in (state.current, state.previous) if link is not None
    }
    complete = sorted(
        (n for n in state.releases if not n.endswith(PARTIAL)),
        key=state.recency,
        reverse=True,
    )
    kept = set(complete[: max(keep, 1)]) | protected
    return sorted(n for n in state.releases if n not in kept)


def finish(
    connector: Connector,
    root: str,
    release: str,
    doomed: list[str],
    lock: DeviceLock,
    record: Record | None = None,
) -> None:
    """Append ``release`` to the history, write its fingerprint ``record`` (if any), prune
    ``doomed`` and release the lock: one command."""
    paths = [posixpath.join(root, RELEASES, name) for name in doomed]
    flag, token = ("record" if record else ""), uuid.uuid4().hex[:8]
    script = shell(FINISH_SCRIPT, root, release, flag, token, *paths, lock.path)
    connector.run(script, stdin=record_text(record) if record else None)
    lock.released = True


def rollback(
    connector: Connector, root: str, to: str | None = None, break_lock: bool = False
) -> tuple[str | None, str]:
    """Switch current to ``to`` (default: previous). Returns (old current, new current)."""
    facts_root = gather_facts(connector, root).root
    with device_lock(connector, facts_root, break_lock) as lock:
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
        old = switch_to(connector, facts_root, target, state)
        finish(connector, facts_root, target, [], lock)
        return old, target
