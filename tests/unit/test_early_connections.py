"""Connections opened before they are needed: the entry point's early reading of a deploy's
hosts, the hand-over of prefetched connections, and paramiko imported without invoke."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgepack.cli.entry import DeployGuess, deploy_hosts
from edgepack.remote import connect
from edgepack.remote.connect import EarlyConnections, early_connections, prefetch
from edgepack.remote.connector import LocalConnector
from edgepack.remote.hosts import parse_host


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["deploy", "--host", "jetson"], DeployGuess(["jetson"])),
        (["deploy", "-H", "a", "--host=b", "--timeout", "5"], DeployGuess(["a", "b"], 5.0)),
        (["deploy", "--json", "--timeout=2.5", "-H", "ssh://u@h:22/x"],
         DeployGuess(["ssh://u@h:22/x"], 2.5)),
        (["deploy", "--compress", "-H", "a"], DeployGuess(["a"], compress=True)),
        (["deploy", "-H", "a", "--compress", "--no-compress"], DeployGuess(["a"], compress=False)),
        (["deploy"], None),
        (["deploy", "--host", "a", "--help"], None),
        (["deploy", "--host", "a", "--inventory", "hosts.txt"], None),
        (["deploy", "--host", "a", "--timeout", "soon"], None),
        (["rollback", "--host", "a"], None),
        (["bench", "--remote", "--host", "a"], None),
        ([], None),
    ],
)  # fmt: skip
def test_the_entry_point_reads_a_deploys_hosts_early(
    argv: list[str], expected: DeployGuess | None
) -> None:
    assert deploy_hosts(argv) == expected


@pytest.fixture(autouse=True)
def _no_prefetched_left() -> None:
    connect._prefetched.clear()


def test_prefetched_connections_serve_the_same_hosts_only(tmp_path: Path) -> None:
    specs = [parse_host(f"local:{tmp_path}")]
    prefetch(specs, 30.0)
    first = connect._prefetched[0]
    assert early_connections(specs, 30.0) is first
    prefetch(specs, 30.0)
    second = connect._prefetched[0]
    other = early_connections(specs, 10.0)  # another timeout: new connections, the old closed
    assert other is not second and not connect._prefetched
    with pytest.raises(RuntimeError, match="closed"):
        second.take(specs[0])  # nothing is handed over any more


def test_take_hands_each_connector_over_once(tmp_path: Path) -> None:
    spec = parse_host(f"local:{tmp_path}")
    with EarlyConnections([spec, spec]) as early:
        taken = early.take(spec)
        assert isinstance(taken, LocalConnector)
        again = early.take(spec)  # not opened early any more: opened now
        assert again is not taken


def test_a_failed_early_connection_raises_where_it_is_taken() -> None:
    from edgepack.errors import RemoteError

    spec = parse_host("ssh://nobody@127.0.0.1:1/x")  # nothing listens on port 1
    with EarlyConnections([spec], io_timeout=5.0) as early, pytest.raises(RemoteError) as caught:
        early.take(spec, 5.0)
    assert "unreachable" in caught.value.message


def _settings_in_fresh_python(config: Path) -> list[str]:
    code = textwrap.dedent(f"""
        import sys
        from edgepack.remote.hosts import parse_host
        from edgepack.remote.ssh import resolve_settings
        settings = resolve_settings(parse_host("box"), __import__("pathlib").Path({str(config)!r}))
        print(settings.hostname, "invoke" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_paramiko_comes_without_invoke_unless_the_config_runs_match_exec(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("Host box\n  HostName plain.example\n")
    assert _settings_in_fresh_python(plain) == ["plain.example", "False"]
    with_exec = tmp_path / "with_exec"
    with_exec.write_text('Match exec "test 1 = 1"\n  HostName matched.example\n')
    assert _settings_in_fresh_python(with_exec) == ["matched.example", "True"]
