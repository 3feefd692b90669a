"""Commands over one long-lived ``sh`` on the device, instead of an SSH exec channel each.

For every exec channel sshd starts the user's login shell, and bash reads ``~/.bashrc`` even for
``ssh host command``: pyenv or conda initialisation there costs 0.2-0.3 s per command (measured on
this project's test devices), and a deploy that changes one file runs a dozen commands. A session
pays that once: its ``sh`` reads the commands from its stdin, runs each in a subshell of its own
(so a ``cd`` or ``exit`` stays there) with stdin from /dev/null or from its own here-document,
and ends it with a marker no output can hold (a random token, the exit status after it on stdout).
"""

from __future__ import annotations

import secrets
import select
import shlex
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

READ_CHUNK = 1 << 16
POLL_S = 0.2


def heredoc_safe(stdin: bytes | None) -> bool:
    """Whether ``stdin`` can travel as a here-document byte for byte: text without NULs that ends
    with a newline (a here-document's body is whole lines). Anything else needs its own channel."""
    if stdin is None:
        return True
    if not stdin.endswith(b"\n") or b"\0" in stdin:
        return False
    try:
        stdin.decode()
    except UnicodeDecodeError:
        return False
    return True


class ShellSession:
    """One ``sh`` reading commands on an SSH channel; one command at a time."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    @classmethod
    def open(cls, transport: paramiko.Transport, timeout: float) -> ShellSession:
        channel = transport.open_session(timeout=timeout)
        channel.exec_command("exec sh")
        return cls(channel)

    def close(self) -> None:
        self._channel.close()

    def run(
        self,
        argv: Sequence[str],
        stdin: bytes | None,
        timeout: float | None,
        check_aborted: Callable[[], None],
    ) -> tuple[int, bytes, bytes]:
        """(exit status, stdout, stderr) of ``argv``; ``stdin`` must be ``heredoc_safe``."""
        token = secrets.token_hex(16)
        self._channel.sendall(command_text(argv, stdin, token))
        return _read_until_markers(self._channel, token.encode(), timeout, check_aborted)


def command_text(argv: Sequence[str], stdin: bytes | None, token: str) -> bytes:
    """The lines the session's ``sh`` reads for one command."""
    if stdin is not None and token.encode() in stdin:
        raise ValueError("the marker occurs in the input")  # 128 random bits: never in practice
    line = f"( {shlex.join(argv)} )"
    body = (
        f"{line} <<'{token}'\n{stdin.decode()}{token}\n"
        if stdin is not None
        else (f"{line} </dev/null\n")
    )
    return (body + f"printf '\\n%s %s\\n' {token} \"$?\"\nprintf '\\n%s\\n' {token} >&2\n").encode()


def _read_until_markers(
    channel: paramiko.Channel,
    token: bytes,
    timeout: float | None,
    check_aborted: Callable[[], None],
) -> tuple[int, bytes, bytes]:
    deadline = None if timeout is None else time.monotonic() + timeout
    stdout, stderr = bytearray(), bytearray()
    while True:
        check_aborted()
        status = _status_after(stdout, token)
        if status is not None and stderr.endswith(b"\n" + token + b"\n"):
            out = bytes(stdout[: stdout.rfind(b"\n" + token + b" ")])
            return status, out, bytes(stderr[: -len(token) - 2])
        # The channel's descriptor wakes on stdout and stderr alike.
        select.select([channel], [], [], POLL_S)
        moved = False
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(READ_CHUNK)
            moved = True
        while channel.recv_ready():
            stdout += channel.recv(READ_CHUNK)
            moved = True
        if moved:
            continue
        if channel.eof_received or channel.closed:
            raise ConnectionResetError("the device's shell ended before the command did")
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no result after {timeout} s")


def _status_after(stdout: bytearray, token: bytes) -> int | None:
    """The exit status the marker line carries, once the whole line is in."""
    if not stdout.endswith(b"\n"):
        return None
    start = stdout.rfind(b"\n" + token + b" ")
    if start < 0:
        return None
    value = stdout[start + len(token) + 2 : -1]
    return int(value) if value.isdigit() else None
