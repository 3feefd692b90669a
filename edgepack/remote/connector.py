"""The one interface every transport satisfies, and the local connector.

A transport provides only what differs between transports: run a command given as an argument
vector, stream a file to the device from an offset, fetch a file, read/write a small file, rename
atomically. Everything else (sizes, checksums, free space, the symlink switch) is built here on top
of ``run`` with shell one-liners whose variable parts are always passed as arguments, never pasted
into the script text.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from edgepack.errors import InterruptError, RemoteError
from edgepack.remote.device_errors import (
    WRITE_DIAGNOSIS,
    command_error,
    diagnosed_write_error,
    os_error,
    short_command,
)

ByteCallback = Callable[[int], None]
"""Called with the number of bytes just moved."""

CHUNK = 1 << 20
DEFAULT_TIMEOUT_S = 600.0

# Prints the free KiB of the file system that will hold $1 (its nearest existing ancestor).
FREE_KB_SNIPPET = """free_kb() {
  d=$1
  while [ ! -d "$d" ]; do d=$(dirname -- "$d"); done
  df -Pk -- "$d" | awk 'NR==2 {print $4}'
}"""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    status: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exit status {self.status}"


# Flushes files and directories to the device's disk: each directory argument with every file and
# directory under it, each file argument itself. `sync -f PATH` is syncfs(2) of PATH's file system:
# one journal commit for everything dirty there, where an fsync per file costs one each (0.67 s for
# the demo bundle's 32 files). Without -f, `sync FILE...` is fsync (coreutils 8.24+, busybox 1.30+);
# where it takes no arguments, a plain `sync` flushes everything instead.
SYNC_SCRIPT = """flush() {
  sync -f -- "$1" && return
  if [ -d "$1" ]; then
    find "$1" -type f -exec sync -- {} + && find "$1" -type d -exec sync -- {} +
  else
    sync -- "$1"
  fi
}
for p; do
  flush "$p" 2>/dev/null || { sync; exit 0; }
done"""


def copy_span(
    source: IO[bytes],
    target: Any,
    length: int | None,
    on_bytes: ByteCallback,
    check_aborted: Callable[[], None],
) -> int:
    """Copy ``length`` bytes (None: up to the end) from ``source``'s position to ``target``'s."""
    sent = 0
    while length is None or sent < length:
        chunk = source.read(CHUNK if length is None else min(CHUNK, length - sent))
        if not chunk:
            break
        check_aborted()
        target.write(chunk)
        sent += len(chunk)
        on_bytes(len(chunk))
    return sent


def copy_ranges(
    source: IO[bytes],
    target: Any,
    ranges: Sequence[tuple[int, int]],
    on_bytes: ByteCallback,
    check_aborted: Callable[[], None],
) -> int:
    """Copy each (start, end) range of ``source`` to the same place in ``target``."""
    sent = 0
    for start, end in ranges:
        source.seek(start)
        target.seek(start)
        sent += copy_span(source, target, end - start, on_bytes, check_aborted)
    return sent


def shell(script: str, *args: str) -> list[str]:
    """``sh -c SCRIPT`` with ``args`` as $1, $2, ...: the arguments are never parsed as code."""
    return ["sh", "-c", script, "edgepack", *args]


class Connector(ABC):
    """A device: a host reached over SSH, or a local directory standing in for one."""

    label: str

    # --- what each transport implements -------------------------------------------------
    @abstractmethod
    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult: ...

    @abstractmethod
    def put(self, local: Path, remote: str, offset: int, on_bytes: ByteCallback) -> int:
        """Write ``local[offset:]`` into ``remote`` at ``offset``; return the bytes sent."""

    @abstractmethod
    def write_ranges(
        self,
        local: Path,
        remote: str,
        size: int,
        ranges: Sequence[tuple[int, int]],
        on_bytes: ByteCallback,
    ) -> int:
        """Make the existing ``remote`` ``size`` bytes long (cut, or extended with zeros), then
        write ``local``'s bytes over each (start, end) range of it in place; return the bytes
        sent. Everything outside the ranges is left as it is (a delta, see remote/delta.py)."""

    @abstractmethod
    def get(self, remote: str, local: Path) -> None: ...

    @abstractmethod
    def read_bytes(self, remote: str) -> bytes | None:
        """A small file's content, or None when it does not exist."""

    @abstractmethod
    def rename(self, source: str, destination: str) -> None:
        """Atomically replace ``destination`` with ``source`` (rename(2) semantics)."""

    def close(self) -> None:  # noqa: B027 - transports without resources need nothing here
        """Release the connection."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- built on top of run ----------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        check: bool = True,
    ) -> CommandResult:
        self.check_aborted()
        result = self.execute(argv, stdin, timeout)
        if check and result.status != 0:
            raise command_error(self.label, argv, result.status, result.stderr)
        return result

    # --- stopping from another thread (Ctrl-C) ---------------------------------------------------
    @property
    def _stop(self) -> threading.Event:
        return self.__dict__.setdefault("_stop_event", threading.Event())  # type: ignore[no-any-return]

    def abort(self) -> None:
        """Called from another thread: the transfer or command under way fails at once."""
        self._stop.set()

    @property
    def aborted(self) -> bool:
        return self._stop.is_set()

    def check_aborted(self) -> None:
        if self.aborted:
            raise InterruptError(f"{self.label}: stopped by an interrupt")

    def write_failure(self, directory: str, what: str) -> RemoteError | None:
        """Why writing into ``directory`` may have failed: a full disk, a refused directory, or
        None when the device cannot say."""
        result = self.run(shell(WRITE_DIAGNOSIS, directory + "/."), check=False)
        if result.status != 0:
            return None
        return diagnosed_write_error(self.label, what, result.stdout, "unknown")

    def flush(self, paths: Sequence[str]) -> None:
        """Make ``paths`` (files, or directories with everything under them) durable."""
        if paths:
            self.run(shell(SYNC_SCRIPT, *paths), timeout=None)

    def sha256(self, directory: str, paths: Sequence[str]) -> dict[str, str]:
        """sha256 of each existing file of ``paths`` (relative to ``directory``), in one command."""
        if not paths:
            return {}
        script = 'cd "$1" && shift && sha256sum -- "$@"'
        result = self.run(shell(script, directory, *paths), check=False, timeout=None)
        digests = {}
        for line in result.stdout.splitlines():
            digest, _, name = line.partition("  ")
            digests[name] = digest
        return digests

    def range_sha256(self, path: str, start: int, length: int) -> str:
        """sha256 of ``length`` bytes of ``path`` from ``start`` (``tail -c +N`` seeks)."""
        script = 'tail -c "+$(($2 + 1))" -- "$1" | head -c "$3" | sha256sum'
        result = self.run(shell(script, path, str(start), str(length)))
        return result.stdout.split()[0]

    def free_bytes(self, path: str) -> int:
        result = self.run(shell(FREE_KB_SNIPPET + '\nfree_kb "$1"', path))
        return int(result.stdout.strip()) * 1024

    def make_executable(self, paths: Sequence[str]) -> None:
        """``chmod a+x`` each of ``paths``."""
        if paths:
            self.run(["chmod", "a+x", "--", *paths])

    def make_dirs(self, paths: Sequence[str]) -> None:
        if paths:
            self.run(["mkdir", "-p", "--", *paths])

    def remove_trees(self, paths: Sequence[str]) -> None:
        if paths:
            self.run(["rm", "-rf", "--", *paths])

    def read_link(self, link: str) -> str | None:
        result = self.run(["readlink", "--", link], check=False)
        return result.stdout.strip() or None if result.status == 0 else None


class LocalConnector(Connector):
    """This machine, with a directory standing in for the device's deploy root."""

    def __init__(self, label: str = "local") -> None:
        self.label = label
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise RemoteError(f"{self.label}: cannot run {argv[0]}: {exc.strerror}") from exc
        with self._lock:
            self._running.add(process)
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.communicate()
            message = f"{self.label}: `{short_command(argv)}` timed out after {timeout} s"
            raise RemoteError(message) from exc
        finally:
            with self._lock:
                self._running.discard(process)
        self.check_aborted()
        return CommandResult(
            tuple(argv),
            process.returncode,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
        )

    def abort(self) -> None:
        super().abort()
        with self._lock:
            for process in self._running:
                process.kill()

    def put(self, local: Path, remote: str, offset: int, on_bytes: ByteCallback) -> int:
        try:
            with local.open("rb") as source, Path(remote).open("r+b" if offset else "wb") as target:
                source.seek(offset)
                target.seek(offset)
                target.truncate()
                return copy_span(source, target, None, on_bytes, self.check_aborted)
        except OSError as exc:
            raise self._write_error(remote, exc) from exc

    def write_ranges(
        self,
        local: Path,
        remote: str,
        size: int,
        ranges: Sequence[tuple[int, int]],
        on_bytes: ByteCallback,
    ) -> int:
        try:
            with local.open("rb") as source, Path(remote).open("r+b") as target:
                target.truncate(size)
                return copy_ranges(source, target, ranges, on_bytes, self.check_aborted)
        except OSError as exc:
            raise self._write_error(remote, exc) from exc

    def _write_error(self, remote: str, exc: OSError) -> RemoteError:
        what = f"writing {remote}"
        known = os_error(self.label, what, exc)
        return known or RemoteError(f"{self.label}: {what} failed: {exc.strerror}")

    def get(self, remote: str, local: Path) -> None:
        try:
            shutil.copyfile(remote, local)
        except OSError as exc:
            raise RemoteError(f"{self.label}: reading {remote} failed: {exc.strerror}") from exc

    def read_bytes(self, remote: str) -> bytes | None:
        try:
            return Path(remote).read_bytes()
        except FileNotFoundError:
            return None

    def rename(self, source: str, destination: str) -> None:
        try:
            Path(source).replace(destination)
        except OSError as exc:
            what = f"renaming {source} to {destination}"
            raise os_error(self.label, what, exc) or RemoteError(
                f"{self.label}: {what} failed: {exc.strerror}"
            ) from exc
