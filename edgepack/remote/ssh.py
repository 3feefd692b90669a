"""The SSH connector (paramiko, imported only when a host is actually contacted).

It reads ``~/.ssh/config`` (HostName, User, Port, IdentityFile, ProxyJump, ConnectTimeout and the
host key settings: StrictHostKeyChecking, UserKnownHostsFile, GlobalKnownHostsFile, HashKnownHosts,
see ``host_keys``), authenticates with keys or the agent, retries the connection with backoff, and
turns every paramiko and socket failure into a one-line RemoteError.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.errors import EdgepackError, InterruptError, RemoteError
from edgepack.remote.connector import (
    CHUNK,
    ByteCallback,
    CommandResult,
    Connector,
    copy_ranges,
    copy_span,
    shell,
)
from edgepack.remote.device_errors import WRITE_DIAGNOSIS, diagnosed_write_error, os_error
from edgepack.remote.host_keys import (
    HostKeyPolicy,
    effective_mode,
    known_in,
    load_known_hosts,
    missing_key_policy,
    policy_from_config,
)
from edgepack.remote.hosts import HostSpec, parse_host
from edgepack.remote.paramiko_loader import enable_match_exec, load_paramiko
from edgepack.remote.shell_session import ShellSession, heredoc_safe

if TYPE_CHECKING:
    import paramiko

SSH_CONFIG_ENV = "EDGEPACK_SSH_CONFIG"
DEFAULT_PORT = 22
KEEPALIVE_S = 5
BACKOFF_S = (1.0, 2.0, 4.0)


@dataclass(frozen=True)
class SshSettings:
    """One host's connection settings after ~/.ssh/config has been applied."""

    alias: str
    hostname: str
    port: int
    user: str | None
    identity_files: tuple[str, ...] = ()
    proxy_jump: tuple[str, ...] = ()
    host_keys: HostKeyPolicy = field(default_factory=lambda: policy_from_config({}))
    connect_timeout: float = 10.0
    compression: bool = False

    @property
    def host_key_name(self) -> str:
        """How known_hosts names this host (OpenSSH's convention, which paramiko follows)."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"


def ssh_config_path() -> Path:
    return Path(os.environ.get(SSH_CONFIG_ENV) or "~/.ssh/config").expanduser()


def resolve_settings(spec: HostSpec, config_path: Path | None = None) -> SshSettings:
    paramiko = load_paramiko()
    path = config_path or ssh_config_path()
    text = path.read_text(errors="replace") if path.is_file() else ""
    enable_match_exec(text)
    config = paramiko.SSHConfig.from_text(text)
    entry: dict[str, Any] = dict(config.lookup(spec.host))
    jump = entry.get("proxyjump", "")
    return SshSettings(
        alias=spec.host,
        hostname=str(entry.get("hostname", spec.host)),
        port=int(spec.port or entry.get("port", DEFAULT_PORT)),
        user=spec.user or entry.get("user"),
        identity_files=tuple(str(Path(f).expanduser()) for f in entry.get("identityfile", [])),
        proxy_jump=tuple(j for j in jump.split(",") if j and j.lower() != "none"),
        host_keys=policy_from_config(entry),
        connect_timeout=float(entry.get("connecttimeout", 10.0)),
        compression=_compression(spec, entry),
    )


def _compression(spec: HostSpec, entry: dict[str, Any]) -> bool:
    if spec.compress is not None:
        return spec.compress
    return str(entry.get("compression", "no")).lower() == "yes"


def _is_transient(error: BaseException) -> bool:
    """Worth another try: the network, not the credentials or the host key."""
    import paramiko

    if isinstance(error, RemoteError | paramiko.AuthenticationException | socket.gaierror):
        return False
    if isinstance(error, paramiko.BadHostKeyException):
        return False
    return isinstance(error, OSError | paramiko.SSHException | EOFError)


def describe_failure(settings: SshSettings, error: BaseException) -> RemoteError:
    """One line per failure kind, each with what to do about it."""
    import paramiko

    where = f"{settings.alias} ({settings.hostname}:{settings.port})"
    if isinstance(error, RemoteError):
        return error
    if isinstance(error, paramiko.BadHostKeyException):
        known = known_in(settings.host_keys, settings.host_key_name)
        where_known = f"-f {shlex.quote(str(known))} " if known else ""
        return RemoteError(
            f"{where}: host key changed (was {error.expected_key.get_name()} "
            f"{error.expected_key.fingerprint}, now {error.key.fingerprint}); refusing to connect",
            hint="if the device was reinstalled, remove the old key: "
            f"ssh-keygen {where_known}-R {shlex.quote(settings.host_key_name)}",
        )
    if isinstance(error, paramiko.AuthenticationException):
        return RemoteError(
            f"{where}: authentication failed for user {settings.user or os.environ.get('USER')}",
            hint="check User and IdentityFile in ~/.ssh/config, or load the key into ssh-agent",
        )
    if isinstance(error, socket.gaierror):
        return RemoteError(f"{where}: cannot resolve host name", hint="check the name or HostName")
    if isinstance(error, TimeoutError):
        return RemoteError(
            f"{where}: timed out", hint="is the device on and on the network? (ConnectTimeout)"
        )
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError | ConnectionError):
        return RemoteError(
            f"{where}: unreachable (connection refused or reset)",
            hint="is sshd running on the device and the port right?",
        )
    if isinstance(error, OSError):
        return RemoteError(f"{where}: unreachable: {error.strerror or error}")
    return RemoteError(f"{where}: SSH failed: {str(error) or type(error).__name__}")


def _tcp_socket(settings: SshSettings, idle_timeout: float) -> socket.socket:
    sock = socket.create_connection(
        (settings.hostname, settings.port), timeout=settings.connect_timeout
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Without it a small request written right after another waits for the device's delayed
    # ACK (Nagle): 40 ms on every channel opened and every command sent (measured).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        # A link that swallows packets (WiFi gone) fails after this, instead of TCP's ~15 minutes.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(idle_timeout * 1000))
    return sock


class SshConnector(Connector):
    def __init__(
        self,
        spec: HostSpec,
        *,
        config_path: Path | None = None,
        io_timeout: float = 30.0,
        attempts: int = 3,
    ) -> None:
        self.spec = spec
        self.label = spec.label
        self.io_timeout = io_timeout
        self.settings = resolve_settings(spec, config_path)
        self._config_path = config_path
        self._jumps: list[SshConnector] = []
        self._client = self._connect_with_retries(attempts)
        self._sftp_client: paramiko.SFTPClient | None = None
        self._shells_lock = threading.Lock()
        # Opened now so that the device's login shell (and its ~/.bashrc) starts while this side
        # gets ready for its first command.
        try:
            self._shells = [self._guard("starting the device's shell", self._open_shell)]
        except BaseException:
            self.close()
            raise

    # --- connection -------------------------------------------------------------------------
    def _connect_with_retries(self, attempts: int) -> paramiko.SSHClient:
        for attempt in range(attempts):
            try:
                return self._connect_once()
            except Exception as error:
                self._close_jumps()
                if attempt + 1 >= attempts or not _is_transient(error):
                    raise describe_failure(self.settings, error) from error
                time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect_once(self) -> paramiko.SSHClient:
        import paramiko

        settings = self.settings
        client = paramiko.SSHClient()
        mode = effective_mode(settings.host_keys, settings.alias)
        if mode != "no":
            load_known_hosts(client, settings.host_keys)
        client.set_missing_host_key_policy(
            missing_key_policy(
                settings.host_keys, mode, settings.alias, settings.port, settings.hostname
            )
        )
        try:
            client.connect(
                settings.hostname,
                port=settings.port,
                username=settings.user,
                key_filename=list(settings.identity_files) or None,
                allow_agent=True,
                look_for_keys=not settings.identity_files,
                sock=self._open_socket(),
                timeout=settings.connect_timeout,
                banner_timeout=settings.connect_timeout,
                auth_timeout=settings.connect_timeout,
                compress=settings.compression,
            )
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None  # connect() succeeded
        transport.set_keepalive(KEEPALIVE_S)
        return client

    def _open_socket(self) -> Any:
        if not self.settings.proxy_jump:
            return _tcp_socket(self.settings, self.io_timeout)
        *earlier, last = self.settings.proxy_jump
        jump_spec = parse_host(last if "://" in last else _jump_as_url(last))
        jump = SshConnector(jump_spec, config_path=self._config_path, io_timeout=self.io_timeout)
        if earlier:  # ProxyJump a,b: reach b through a (the config of b is not consulted)
            jump.close()
            raise RemoteError(
                f"{self.label}: ProxyJump chains of more than one host are not supported",
                hint="give the jump host its own ProxyJump in ~/.ssh/config",
            )
        self._jumps.append(jump)
        transport = jump._client.get_transport()
        assert transport is not None
        return transport.open_channel(
            "direct-tcpip", (self.settings.hostname, self.settings.port), ("127.0.0.1", 0)
        )

    def _close_jumps(self) -> None:
        for jump in self._jumps:
            jump.close()
        self._jumps.clear()

    def close(self) -> None:
        # Closing a connection that just broke can raise (a send on a reset socket); that
        # error would replace the one that says what broke, so it is dropped.
        with contextlib.suppress(Exception):
            if self._sftp_client is not None:
                self._sftp_client.close()
        with contextlib.suppress(Exception):
            self._client.close()
        self._close_jumps()

    @property
    def _sftp(self) -> paramiko.SFTPClient:
        if self._sftp_client is None:
            self._sftp_client = self._guard("opening SFTP", self._client.open_sftp)
            self._sftp_client.get_channel().settimeout(self.io_timeout)
        return self._sftp_client

    def abort(self) -> None:
        """Close the connection under whatever is using it (Ctrl-C): a blocked SFTP write or
        command fails at once instead of waiting for its window or the link's timeout."""
        super().abort()
        with contextlib.suppress(Exception):
            self._client.close()
        self._close_jumps()

    def _alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _guard(self, what: str, action: Any, *args: Any, written: str | None = None) -> Any:
        """Run a paramiko call; a failure becomes a one-line error naming ``what``: the device's
        own refusal (full, denied, missing) where it is one, else a lost connection."""
        try:
            return action(*args)
        except EdgepackError:
            raise
        except (OSError, EOFError, Exception) as error:
            if self.aborted:
                raise InterruptError(f"{self.label}: stopped by an interrupt") from error
            device = self._device_side(what, error, written)
            if device is not None:
                raise device from error
            base = describe_failure(self.settings, error)
            raise RemoteError(
                f"{self.label}: {what}: connection lost ({base.message.split(': ', 1)[-1]})",
                hint="rerun the command: transfers resume where they stopped",
            ) from error

    def _device_side(
        self, what: str, error: BaseException, written: str | None
    ) -> RemoteError | None:
        if not isinstance(error, OSError) or isinstance(error, TimeoutError | ConnectionError):
            return None
        known = os_error(self.label, what, error)
        if known is not None or written is None or error.errno is not None or not self._alive():
            return known
        # SFTP status "Failure" (no errno): ask the device what the file system says.
        try:
            report = self._execute(shell(WRITE_DIAGNOSIS, written), None, self.io_timeout)
        except Exception:
            return None
        return diagnosed_write_error(self.label, what, report.stdout, str(error))

    # --- the transport's operations -------------------------------------------------------
    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        return self._guard(  # type: ignore[no-any-return]
            f"running {argv[0]}", self._execute, argv, stdin, timeout
        )

    def _execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionResetError("the SSH session is closed")
        if not heredoc_safe(stdin):
            return self._execute_on_channel(transport, argv, stdin, timeout)
        session = self._idle_shell() or self._open_shell()
        try:
            status, stdout, stderr = session.run(argv, stdin, timeout, self.check_aborted)
        except BaseException:
            session.close()
            raise
        with self._shells_lock:
            self._shells.append(session)
        return CommandResult(
            tuple(argv), status, stdout.decode(errors="replace"), stderr.decode(errors="replace")
        )

    def _open_shell(self) -> ShellSession:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionResetError("the SSH session is closed")
        return ShellSession.open(transport, self.io_timeout)

    def _idle_shell(self) -> ShellSession | None:
        with self._shells_lock:
            return self._shells.pop() if self._shells else None

    def _execute_on_channel(
        self,
        transport: paramiko.Transport,
        argv: Sequence[str],
        stdin: bytes | None,
        timeout: float | None,
    ) -> CommandResult:
        channel = transport.open_session(timeout=self.io_timeout)
        try:
            channel.exec_command(shlex.join(argv))
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            stdout, stderr = _drain(channel, timeout, self.check_aborted)
            status = channel.recv_exit_status()
            if status == -1 and not transport.is_active():
                raise ConnectionResetError("the SSH session ended before the command did")
            return CommandResult(
                tuple(argv),
                status,
                stdout.decode(errors="replace"),
                stderr.decode(errors="replace"),
            )
        finally:
            channel.close()

    def put(self, local: Path, remote: str, offset: int, on_bytes: ByteCallback) -> int:
        what = f"uploading {remote}"
        return self._guard(what, self._put, local, remote, offset, on_bytes, written=remote)  # type: ignore[no-any-return]

    def _put(self, local: Path, remote: str, offset: int, on_bytes: ByteCallback) -> int:
        with local.open("rb") as source, self._sftp.open(remote, "r+" if offset else "w") as target:
            # Pipelined: paramiko does not wait for each 32 KiB write's reply; without this
            # every request costs a round trip and a WiFi link never reaches its rate.
            target.set_pipelined(True)
            source.seek(offset)
            target.seek(offset)
            sent = copy_span(source, target, None, on_bytes, self.check_aborted)
        self._check_size(remote, offset + sent)
        return sent

    def make_executable(self, paths: Sequence[str]) -> None:
        """Over SFTP: a ``chmod`` command would wait for a shell while the verifier uses one."""
        for path in paths:
            self._guard(f"making {path} executable", self._chmod_executable, path)

    def _chmod_executable(self, path: str) -> None:
        mode = self._sftp.stat(path).st_mode or 0
        self._sftp.chmod(path, (mode & 0o7777) | 0o111)

    def write_ranges(
        self,
        local: Path,
        remote: str,
        size: int,
        ranges: Sequence[tuple[int, int]],
        on_bytes: ByteCallback,
    ) -> int:
        what = f"writing ranges of {remote}"
        return self._guard(  # type: ignore[no-any-return]
            what, self._write_ranges, local, remote, size, ranges, on_bytes, written=remote
        )

    def _write_ranges(
        self,
        local: Path,
        remote: str,
        size: int,
        ranges: Sequence[tuple[int, int]],
        on_bytes: ByteCallback,
    ) -> int:
        # SFTP opens without truncating ("r+"), cuts or extends with a setstat, seeks and writes.
        with local.open("rb") as source, self._sftp.open(remote, "r+") as target:
            target.set_pipelined(True)
            target.truncate(size)
            sent = copy_ranges(source, target, ranges, on_bytes, self.check_aborted)
        self._check_size(remote, size)
        return sent

    def _check_size(self, remote: str, size: int) -> None:
        # A pipelined write's error can go unreported (paramiko reads the replies lazily and a
        # close does not look at them); the size the server ends with cannot lie. (A refused
        # write inside a delta's ranges leaves the size alone: the sha256 check catches it.)
        if self._sftp.stat(remote).st_size != size:
            raise OSError("a write was refused (the file is shorter than what was sent)")

    def get(self, remote: str, local: Path) -> None:
        self._guard(f"downloading {remote}", self._get, remote, local)

    def _get(self, remote: str, local: Path) -> None:
        with self._sftp.open(remote, "r") as source, local.open("wb") as target:
            source.prefetch()
            while chunk := source.read(CHUNK):
                target.write(chunk)

    def read_bytes(self, remote: str) -> bytes | None:
        try:
            return self._guard(f"reading {remote}", self._read_small, remote)  # type: ignore[no-any-return]
        except RemoteError as error:
            if isinstance(error.__cause__, FileNotFoundError):
                return None
            raise

    def _read_small(self, remote: str) -> bytes:
        with self._sftp.open(remote, "r") as source:
            return source.read()  # type: ignore[no-any-return]

    def rename(self, source: str, destination: str) -> None:
        # posix-rename@openssh.com is rename(2): it replaces the destination atomically.
        self._guard(f"renaming {source}", self._sftp.posix_rename, source, destination)


def _jump_as_url(jump: str) -> str:
    """``user@host:port`` (ProxyJump syntax) as an ssh:// URL (host specs read ``:`` as a root)."""
    return "ssh://" + jump


def _drain(
    channel: paramiko.Channel, timeout: float | None, check_aborted: Callable[[], None]
) -> tuple[bytes, bytes]:
    """Read stdout and stderr together (reading one to its end first can deadlock)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    stdout, stderr = bytearray(), bytearray()
    channel.settimeout(0.2)
    while True:
        check_aborted()
        progressed = False
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(CHUNK)
            progressed = True
        try:
            data = channel.recv(CHUNK)
            stdout += data
            progressed = progressed or bool(data)
            if not data and channel.exit_status_ready() and not channel.recv_stderr_ready():
                return bytes(stdout), bytes(stderr)
        except TimeoutError:
            pass
        if not progressed and deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no result after {timeout} s")
