"""One deploy at a time per deploy root: a lock directory on the device with its owner recorded,
so a stale lock (its process gone) can be recognised and taken over."""

from __future__ import annotations

import json
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from edgepack.errors import RemoteError
from edgepack.remote.connector import Connector, shell
from edgepack.remote.device_errors import command_error
from edgepack.remote.layout import LOCK

_held_locks: set[str] = set()
"""Tokens of the device locks this process holds right now (to recognise its own stale ones)."""


@dataclass
class DeviceLock:
    path: str
    released: bool = False


# $1 the deploy root, $2 the lock, $3 the owner record; exits 3 when another holds the lock, and
# then prints how many seconds ago the lock was made. The owner record is synced to the disk: after
# a power loss a lock must still say whose it was.
LOCK_SCRIPT = """mkdir -p -- "$1" || exit 1
if ! mkdir -- "$2" 2>/dev/null; then
  echo $(( $(date +%s) - $(stat -c %Y -- "$2" 2>/dev/null || date +%s) ))
  exit 3
fi
printf '%s' "$3" > "$2/owner" || exit 1
sync -- "$2/owner" "$2" "$1" 2>/dev/null || sync
"""
OWNERLESS_STALE_S = 5
"""A lock with no readable owner record is one whose deploy died (a power loss) between making
it and writing its record (microseconds apart), once it is this old."""


@contextmanager
def device_lock(connector: Connector, root: str, break_lock: bool) -> Iterator[DeviceLock]:
    """One deploy per deploy root; the owner is recorded so a stale lock can be recognised."""
    lock = DeviceLock(posixpath.join(root, LOCK))
    token = uuid.uuid4().hex
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "time": time.time()}
    take = shell(LOCK_SCRIPT, root, lock.path, json.dumps(owner))
    result = connector.run(take, check=False)
    if result.status == 3:
        age = int(result.stdout.strip() or 0) if result.stdout.strip().lstrip("-").isdigit() else 0
        _take_over_or_refuse(connector, lock.path, break_lock, age)
        result = connector.run(take, check=False)
    if result.status != 0:
        error = command_error(connector.label, take, result.status, result.stderr)
        if type(error) is not RemoteError:  # full, refused, missing: said as such
            raise error
        raise RemoteError(f"{connector.label}: cannot take {lock.path}: {result.error_line()}")
    _held_locks.add(token)
    try:
        yield lock
    finally:
        _held_locks.discard(token)
        if not lock.released:
            _release_quietly(connector, lock.path)


def _take_over_or_refuse(connector: Connector, lock: str, break_lock: bool, age_s: int) -> None:
    data = connector.read_bytes(posixpath.join(lock, "owner"))
    owner = _parse_owner(data)
    ownerless = not owner and age_s >= OWNERLESS_STALE_S
    if not (break_lock or ownerless or _is_stale(owner)):
        since = time.strftime("%H:%M:%S", time.localtime(float(owner.get("time", 0))))
        raise RemoteError(
            f"{connector.label}: another deploy holds {lock} (from {owner.get('host', '?')}, "
            f"pid {owner.get('pid', '?')}, since {since})",
            hint="wait for it; if that deploy is dead, rerun with --break-lock",
        )
    connector.remove_trees([lock])


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
