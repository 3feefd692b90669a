"""A full disk, a refused write and a missing program on the device are told apart from a lost
connection, each with its own message, hint and exit code (real commands, real errno)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.errors import (
    DeviceFullError,
    DevicePermissionError,
    DeviceProgramMissingError,
    ExitCode,
    RemoteError,
)
from edgepack.remote.connector import LocalConnector
from edgepack.remote.device_errors import diagnosed_write_error, os_error


def test_a_missing_program_is_named_with_exit_13() -> None:
    with LocalConnector() as device, pytest.raises(DeviceProgramMissingError) as missing:
        device.run(["sh", "-c", 'edgepack-no-such-tool "$1"', "sh", "x"])
    assert missing.value.exit_code == ExitCode.DEVICE_PROGRAM_MISSING == 13
    assert "`edgepack-no-such-tool` is not installed on the device" in missing.value.message
    assert "connection" not in missing.value.message


def test_a_full_disk_in_a_command_and_in_a_write_is_exit_11() -> None:
    with LocalConnector() as device, pytest.raises(DeviceFullError) as full:
        device.run(["dd", "if=/dev/zero", "of=/dev/full", "bs=512", "count=1"])
    assert full.value.exit_code == ExitCode.DEVICE_FULL == 11
    assert "disk is full" in full.value.message and full.value.hint
    # What a local or SFTP write reports: ENOSPC.
    with pytest.raises(OSError) as written, Path("/dev/full").open("wb", buffering=0) as target:
        target.write(b"x")
    error = os_error("dev", "uploading x", written.value)
    assert isinstance(error, DeviceFullError) and "disk is full" in error.message


def test_a_refused_directory_is_exit_12() -> None:
    with LocalConnector() as device, pytest.raises(DevicePermissionError) as refused:
        device.run(["mkdir", "--", "/sys/edgepack-test"])  # EPERM, even for root
    assert refused.value.exit_code == ExitCode.DEVICE_DENIED == 12
    assert "the device refused" in refused.value.message


@pytest.mark.parametrize(
    ("report", "kind", "text"),
    [
        ("12 yes\n", DeviceFullError, "disk is full (12 KiB left)"),
        ("90000 no\n", DevicePermissionError, "not writable"),
        ("90000 yes\n", RemoteError, "the device failed the write"),
    ],
)
def test_an_sftp_failure_without_errno_is_diagnosed_on_the_device(
    report: str, kind: type[RemoteError], text: str
) -> None:
    error = diagnosed_write_error("dev", "uploading x", report, "Failure")
    assert type(error) is kind and text in error.message
    assert "connection lost" not in error.message
