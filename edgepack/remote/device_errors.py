"""What went wrong on the device, told apart from a lost connection.

A full disk, a refused write and a missing program each get their own error, message and hint;
only what really is the link's fault reads "connection lost". Remote commands report through their
exit status and stderr (127: not found; the C library's strerror texts), local and SFTP writes
through errno; an SFTP write that fails without one (OpenSSH's sftp-server answers ENOSPC with a
bare "Failure") is diagnosed by asking the device about the file system it wrote to.
"""

from __future__ import annotations

import errno
import re
import shlex
from collections.abc import Sequence

from edgepack.errors import (
    DeviceFullError,
    DevicePermissionError,
    DeviceProgramMissingError,
    RemoteError,
)

NOT_FOUND_STATUS = 127
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")
DENIED_TEXTS = ("Permission denied", "Operation not permitted", "Read-only file system")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DENIED_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
FULL_BELOW_KB = 256
"""An SFTP write failure with less free space than this left is a full disk."""

FULL_HINT = (
    "free space on the device (fewer releases: --keep 1) or deploy to another --root; "
    "`current` is unchanged and the partial release is kept, so a rerun resumes"
)
DENIED_HINT = (
    "check the owner and mode of the deploy root (--root), or deploy as a user who may write there"
)


def short_command(argv: Sequence[str], limit: int = 120) -> str:
    text = shlex.join(argv[:3] if argv[:2] == ["sh", "-c"] else argv)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def missing_program(stderr: str) -> str | None:
    """The program a shell could not find (dash: ``sh: 1: X: not found``; bash: ``X: command not
    found``; busybox: ``sh: X: not found``)."""
    found = re.search(r"([\w.+-]+): (?:command )?not found", stderr)
    return found[1] if found else None


def command_error(label: str, argv: Sequence[str], status: int, stderr: str) -> RemoteError:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    line = lines[-1] if lines else f"exit status {status}"
    if status == NOT_FOUND_STATUS:
        program = missing_program(stderr) or argv[0]
        return DeviceProgramMissingError(
            f"{label}: `{program}` is not installed on the device (exit status 127)",
            hint=f"install {program} on the device (coreutils and findutils provide what deploy "
            "runs: sha256sum, stat, head, find, sync)",
        )
    if any(text in stderr for text in DISK_FULL_TEXTS):
        return DeviceFullError(f"{label}: the device's disk is full: {line}", hint=FULL_HINT)
    if any(text in stderr for text in DENIED_TEXTS):
        return DevicePermissionError(f"{label}: the device refused: {line}", hint=DENIED_HINT)
    return RemoteError(
        f"{label}: `{short_command(argv)}` failed: {line}",
        hint="rerun with --debug for the full command",
    )


def os_error(label: str, what: str, error: OSError) -> RemoteError | None:
    """The device-side meaning of an errno, or None when it says nothing about the device."""
    reason = error.strerror or str(error)
    if error.errno in FULL_ERRNOS:
        return DeviceFullError(f"{label}: {what}: the device's disk is full ({reason})", FULL_HINT)
    if error.errno in DENIED_ERRNOS or isinstance(error, PermissionError):
        return DevicePermissionError(f"{label}: {what}: the device refused ({reason})", DENIED_HINT)
    if error.errno == errno.ENOENT or isinstance(error, FileNotFoundError):
        return RemoteError(f"{label}: {what}: {reason}")
    return None


# Prints "free_kb writable" for the directory that holds $1.
WRITE_DIAGNOSIS = """d=$(dirname -- "$1")
kb=$(df -Pk -- "$d" 2>/dev/null | awk 'NR==2 {print $4}')
w=no; [ -w "$d" ] && w=yes
printf '%s %s\\n' "${kb:-unknown}" "$w"
"""


def diagnosed_write_error(label: str, what: str, report: str, reason: str) -> RemoteError:
    """From WRITE_DIAGNOSIS's output: a full disk, a refused directory, or a write the device's
    SFTP server failed for a reason it did not say (the connection itself is fine)."""
    free_kb, _, writable = report.strip().partition(" ")
    if free_kb.isdigit() and int(free_kb) < FULL_BELOW_KB:
        return DeviceFullError(
            f"{label}: {what}: the device's disk is full ({free_kb} KiB left)", FULL_HINT
        )
    if writable == "no":
        return DevicePermissionError(
            f"{label}: {what}: the device refused (the directory is not writable)", DENIED_HINT
        )
    return RemoteError(
        f"{label}: {what}: the device failed the write ({reason}; {free_kb} KiB free now)",
        hint="the disk may have filled and emptied again; rerun the command (it resumes), "
        "and check the device's storage if it repeats",
    )
