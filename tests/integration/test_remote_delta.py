"""Deploy's block delta over real OpenSSH servers: the bytes on the wire for a one-byte change
inside a big engine file, and a delta stopped half way that a rerun finishes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from edgepack.bundle import verify_bundle
from edgepack.errors import InterruptError
from edgepack.remote.connector import ByteCallback, CommandResult
from edgepack.remote.delta import COARSE_SCRIPT, FINE_SCRIPT
from edgepack.remote.hosts import parse_host
from edgepack.remote.ssh import SshConnector
from edgepack.remote.sync import DeployOptions, SilentProgress, deploy
from edgepack.targets import TargetRegistry
from tests.integration.conftest import make_bundle
from tests.integration.ssh_netns import NetnsDevice, SshServer
from tests.integration.test_remote_deploy import deploy as cli_deploy
from tests.unit.file_edits import flipped

pytestmark = pytest.mark.integration
MB = 1_000_000
WEIGHTS = "engine/model.onnx.data"


def test_one_byte_changed_in_a_32_mb_file_costs_under_100_kb_on_the_wire(
    sshd_factory: Callable[..., SshServer],
    netns_factory: Callable[[], NetnsDevice],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Everything the deploy moves, both ways, counted on the device's veth: the SSH session,
    every command and its output, the hash lists and the blocks written."""
    device = netns_factory()
    sshd_factory("dev", address=device.device_address, port=2222, netns=device.name)
    root = tmp_path / "device-root"
    old = os.urandom(32 * MB)
    new = flipped(old, 20 * MB + 3)
    first = make_bundle(tmp_path / "b1", {"model.onnx.data": old, "genai_config.json": b"{}"})
    code, [report] = cli_deploy(capsys, "--host", "dev", "--root", str(root), "--bundle",
                                str(first))  # fmt: skip
    assert code == 0, report
    second = make_bundle(tmp_path / "b2", {"model.onnx.data": new, "genai_config.json": b"{}"})
    sent, received = device.sent_bytes(), device.received_bytes()
    code, [changed] = cli_deploy(capsys, "--host", "dev", "--root", str(root), "--bundle",
                                 str(second))  # fmt: skip
    wire = device.sent_bytes() - sent + device.received_bytes() - received
    assert code == 0, changed
    assert changed["files"]["delta"] == 1
    assert wire <= 100_000, f"{wire} bytes on the wire"
    assert changed["bytes_sent"] < wire  # the payload and hash lists are part of what moved
    assert (root / "current" / WEIGHTS).read_bytes() == new
    assert (root / "releases" / report["release"] / WEIGHTS).read_bytes() == old


class _Counting(SshConnector):
    """Counts what SFTP writes and what the device's hash commands return; stops (as Ctrl-C
    does) once the first of a delta's ranges is written, when asked to."""

    stop_after_first_range = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.written = 0
        self.hash_output = 0

    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        result = super().execute(argv, stdin, timeout)
        if len(argv) > 2 and argv[2] in (COARSE_SCRIPT, FINE_SCRIPT):
            self.hash_output += len(result.stdout.encode())
        return result

    def put(self, local: Path, remote: str, offset: int, on_bytes: ByteCallback) -> int:
        sent = super().put(local, remote, offset, on_bytes)
        self.written += sent
        return sent

    def write_ranges(
        self,
        local: Path,
        remote: str,
        size: int,
        ranges: Sequence[tuple[int, int]],
        on_bytes: ByteCallback,
    ) -> int:
        def counted(count: int) -> None:
            self.written += count
            on_bytes(count)
            if self.stop_after_first_range and self.written >= ranges[0][1] - ranges[0][0]:
                self.abort()

        return super().write_ranges(local, remote, size, ranges, counted)


def test_a_delta_stopped_half_way_is_finished_by_a_rerun(
    sshd_factory: Callable[..., SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sshd_factory("dev")
    registry = TargetRegistry.default([])
    root = tmp_path / "device-root"
    old = os.urandom(12 * MB)
    new = flipped(old, 5, 7 * MB, 11 * MB + 1)
    first = make_bundle(tmp_path / "b1", {"model.onnx.data": old})
    second = make_bundle(tmp_path / "b2", {"model.onnx.data": new})
    args = ["--host", "dev", "--root", str(root), "--bundle"]
    code, [report] = cli_deploy(capsys, *args, str(first))
    assert code == 0, report

    options = DeployOptions(root=str(root))
    device = _Counting(parse_host("dev"))
    device.stop_after_first_range = True
    with device, pytest.raises(InterruptError):
        deploy(device, second, verify_bundle(second), options, registry, SilentProgress())
    partial = next((root / "releases").glob("*.partial")) / WEIGHTS
    assert partial.stat().st_size == len(new) and partial.read_bytes() != new
    assert str((root / "current").readlink()) == f"releases/{report['release']}"

    device = _Counting(parse_host("dev"))
    with device:
        done = deploy(device, second, verify_bundle(second), options, registry, SilentProgress())
    [change] = [c for c in done.changes if c["action"] == "delta"]
    # Rebuilt in place: the first range landed before the stop, the other two are sent now.
    assert change["base"] == str(partial) and change["ranges"] == 2
    assert done.bytes_sent == device.written + device.hash_output
    assert device.written < 2 * 4096 + 2000  # two fine blocks and the manifest
    assert device.hash_output < 2 * 256 * 33 + 12 * 33 + 100
    assert (root / "current" / WEIGHTS).read_bytes() == new
    assert (root / "releases" / report["release"] / WEIGHTS).read_bytes() == old
