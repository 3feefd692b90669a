"""SSH compression, counted on a namespace device's veth: ``deploy --compress`` and
``Compression yes`` in ~/.ssh/config send a compressible bundle in far fewer bytes than it holds;
without either, every byte goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import make_bundle
from tests.integration.ssh_netns import NetnsDevice, SshClientSide, SshServer
from tests.integration.test_remote_deploy import deploy as cli_deploy

pytestmark = pytest.mark.integration
MB = 1_000_000
# Text-like weights: repetitive enough for zlib to take them to a small fraction.
COMPRESSIBLE = b"".join(b"layer %06d weight block\n" % n for n in range(8 * MB // 24))


def _wire_bytes_of_a_first_copy(
    device: NetnsDevice, tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str
) -> int:
    bundle = make_bundle(tmp_path / "bundle", {"model.onnx.data": COMPRESSIBLE})
    before = device.sent_bytes()
    code, [report] = cli_deploy(capsys, "--host", "dev", "--root", str(tmp_path / "root"),
                                "--bundle", str(bundle), *flags)  # fmt: skip
    assert code == 0, report
    assert report["status"] == "deployed"
    return device.sent_bytes() - before


@pytest.fixture
def device(
    sshd_factory: Callable[..., SshServer], netns_factory: Callable[[], NetnsDevice]
) -> NetnsDevice:
    made = netns_factory()
    sshd_factory("dev", address=made.device_address, port=2222, netns=made.name)
    return made


@pytest.mark.parametrize(("flags", "compressed"), [((), False), (("--compress",), True),
                                                   (("--no-compress",), False)])  # fmt: skip
def test_deploy_compresses_only_when_asked(
    device: NetnsDevice,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...],
    compressed: bool,
) -> None:
    wire = _wire_bytes_of_a_first_copy(device, tmp_path, capsys, *flags)
    if compressed:
        assert wire < len(COMPRESSIBLE) / 4
    else:
        assert wire > len(COMPRESSIBLE)


def test_the_ssh_configs_compression_is_followed_and_the_flag_overrides_it(
    device: NetnsDevice,
    ssh_client: SshClientSide,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = ssh_client.config.read_text()
    ssh_client.config.write_text(config.replace("Host dev\n", "Host dev\n  Compression yes\n"))
    assert "Compression yes" in ssh_client.config.read_text()
    assert _wire_bytes_of_a_first_copy(device, tmp_path / "a", capsys) < len(COMPRESSIBLE) / 4
    overridden = _wire_bytes_of_a_first_copy(device, tmp_path / "b", capsys, "--no-compress")
    assert overridden > len(COMPRESSIBLE)
