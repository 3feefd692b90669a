"""Commands over one long-lived device shell per SSH connection (remote/shell_session.py), on a
real sshd: exact output, exit status and stderr, each command in a subshell of its own, stdin
as a here-document or on a channel of its own, timeouts, several threads at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from edgepack.errors import RemoteError
from edgepack.remote.connector import shell
from edgepack.remote.hosts import parse_host
from edgepack.remote.ssh import SshConnector
from tests.integration.conftest import SshServer

SHELL_OF = shell('echo "$PPID $(cat /proc/$PPID/comm)"')
"""The pid and name of the command's parent: the device shell (a command of an exec channel of
its own would have sshd there)."""


@pytest.fixture
def device(sshd_factory: Callable[..., SshServer]) -> SshConnector:
    sshd_factory("dev")
    return SshConnector(parse_host("dev"))


def test_output_status_and_errors_are_exact(device: SshConnector) -> None:
    with device:
        result = device.run(shell('printf "a\\nb"; printf "oops" >&2; exit 3'), check=False)
        assert (result.stdout, result.stderr, result.status) == ("a\nb", "oops", 3)
        empty = device.run(["true"])
        assert (empty.stdout, empty.stderr, empty.status) == ("", "", 0)
        big = device.run(["head", "-c", "3000000", "/dev/zero"])
        assert len(big.stdout) == 3_000_000


def test_every_command_runs_apart_in_one_shell(device: SshConnector) -> None:
    with device:
        device.run(shell("cd /; x=1; export Y=2; exit 0"))
        assert device.run(["pwd"]).stdout.strip() != "/"
        assert device.run(shell('echo "${x-unset} ${Y-unset}"')).stdout == "unset unset\n"
        shells = {device.run(SHELL_OF).stdout for _ in range(3)}
        assert len(shells) == 1  # the login shell (and its rc file) ran once for all of them
        assert shells.pop().split()[1] == "sh"


def test_stdin_arrives_byte_for_byte_and_a_reader_without_it_sees_its_end(
    device: SshConnector,
) -> None:
    with device:
        text = b"line one\n'quoted' $HOME `x`\n"
        assert device.run(["cat"], stdin=text).stdout.encode() == text
        binary = b"\x00\x01no newline at the end"
        assert device.run(["od", "-An", "-c"], stdin=binary).stdout.split()[:2] == ["\\0", "001"]
        assert device.run(["cat"]).stdout == ""  # /dev/null, not the shell's own input


def test_a_timed_out_command_is_an_error_and_the_next_one_runs(device: SshConnector) -> None:
    with device:
        started = time.monotonic()
        with pytest.raises(RemoteError, match="timed out"):
            device.run(["sleep", "30"], timeout=1)
        assert time.monotonic() - started < 10
        assert device.run(["echo", "after"]).stdout == "after\n"


def test_commands_from_several_threads_at_once(device: SshConnector) -> None:
    results: list[str] = []

    def one(n: int) -> None:
        results.append(device.run(shell('sleep 0.3; echo "$1"', str(n))).stdout)

    with device:
        threads = [threading.Thread(target=one, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == ["0\n", "1\n", "2\n"]
