"""Host keys as OpenSSH treats them, against real sshd servers: StrictHostKeyChecking yes / ask /
accept-new / no, several UserKnownHostsFile and GlobalKnownHostsFile, hashed entries, and
HashKnownHosts when a key is added."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepack.cli.main import run
from edgepack.errors import ExitCode
from tests.integration.conftest import SshClientSide, SshServer

pytestmark = pytest.mark.integration


def _alias(client: SshClientSide, server: SshServer, name: str, **extra: str) -> str:
    """A second Host entry for ``server`` (the first match in ssh_config wins, so it goes first)."""
    lines = [f"Host {name}", f"  HostName {server.address}", f"  Port {server.port}",
             "  User root", f"  IdentityFile {client.key}",
             *(f"  {key} {value}" for key, value in extra.items())]  # fmt: skip
    client.config.write_text("\n".join(lines) + "\n" + client.config.read_text())
    return name


def _detect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run([*args[:-1], "targets", "detect", args[-1], "--json"])
    return code, " ".join(capsys.readouterr().err.split())


def _scan(server: SshServer, hashed: bool = False) -> str:
    """The server's key line, as ssh-keyscan prints it (hashed with -H)."""
    argv = ["ssh-keyscan", "-t", "ed25519", "-p", str(server.port), *(["-H"] if hashed else [])]
    return subprocess.run([*argv, server.address], capture_output=True, text=True).stdout


def test_accept_new_records_a_hashed_entry_when_asked_and_reads_it_back(
    sshd_factory: Callable[..., SshServer],
    ssh_client: SshClientSide,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = sshd_factory("dev")
    known = tmp_path / "hashed_known_hosts"
    alias = _alias(ssh_client, server, "hashing", UserKnownHostsFile=str(known),
                   HashKnownHosts="yes", StrictHostKeyChecking="accept-new")  # fmt: skip
    assert _detect(capsys, alias)[0] == 0
    entry = known.read_text()
    assert entry.startswith("|1|") and server.address not in entry
    assert _detect(capsys, alias)[0] == 0  # the hashed entry is read: nothing added
    assert known.read_text() == entry
    server.reinstall()
    code, err = _detect(capsys, alias)
    assert code == ExitCode.REMOTE and "host key changed" in err
    assert f"ssh-keygen -f {known} -R '[{server.address}]:{server.port}'" in err


def test_yes_connects_only_to_known_keys_from_any_user_or_global_file(
    sshd_factory: Callable[..., SshServer],
    ssh_client: SshClientSide,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = sshd_factory("dev")
    first, second, system = tmp_path / "k1", tmp_path / "k2", tmp_path / "global"
    first.write_text("")
    files = f"{first} {second}"
    strict = _alias(ssh_client, server, "strict", UserKnownHostsFile=files,
                    GlobalKnownHostsFile=str(system), StrictHostKeyChecking="yes")  # fmt: skip
    code, err = _detect(capsys, strict)
    assert code == ExitCode.REMOTE and "StrictHostKeyChecking is yes" in err
    assert first.read_text() == "" and not second.exists()
    system.write_text(_scan(server, hashed=True))  # a hashed entry in the global file
    assert _detect(capsys, strict)[0] == 0
    system.unlink()
    second.write_text(_scan(server))  # the second user file
    assert _detect(capsys, strict)[0] == 0
    assert first.read_text() == ""


def test_ask_without_a_terminal_refuses(
    sshd_factory: Callable[..., SshServer],
    ssh_client: SshClientSide,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = sshd_factory("dev")
    known = tmp_path / "asked"
    alias = _alias(ssh_client, server, "asking", UserKnownHostsFile=str(known),
                   StrictHostKeyChecking="ask")  # fmt: skip
    result = subprocess.run(  # no controlling terminal: nobody can answer
        ["setsid", "-w", sys.executable, "-c", "import sys; from edgepack.cli.main import run; "
         f"sys.exit(run(['targets', 'detect', '{alias}']))"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == ExitCode.REMOTE, result.stderr
    assert "not accepted" in result.stderr and not known.exists()


def test_no_needs_the_explicit_flag_and_says_so_loudly(
    sshd_factory: Callable[..., SshServer],
    ssh_client: SshClientSide,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = sshd_factory("dev")
    known = tmp_path / "k"
    alias = _alias(ssh_client, server, "lax", UserKnownHostsFile=str(known),
                   StrictHostKeyChecking="no")  # fmt: skip
    code, err = _detect(capsys, alias)  # checked as accept-new: the key is recorded
    assert code == 0 and "ignored without --insecure-host-keys" in err
    server.reinstall()
    assert _detect(capsys, alias)[0] == ExitCode.REMOTE  # a changed key is still refused
    code, err = _detect(capsys, "--insecure-host-keys", alias)
    assert code == 0 and "WARNING: host key checking is OFF" in err
