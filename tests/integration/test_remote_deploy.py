"""Deploy over real OpenSSH servers: loopback and network-namespace devices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgepack.cli.main import run
from edgepack.errors import ExitCode
from edgepack.remote.connect import open_connector
from edgepack.remote.hosts import parse_host
from tests.integration.conftest import (
    HOSTILE_KINDS,
    NetnsDevice,
    SshClientSide,
    SshServer,
    make_bundle,
    make_hostile_bundle,
    mounted_tmpfs,
    nft_available,
    require,
)

pytestmark = pytest.mark.integration
MB = 1_000_000


def deploy(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    capsys.readouterr()
    code = run(["deploy", "--json", *args])
    out, err = capsys.readouterr()
    sys.stderr.write(err)  # captured again: pytest shows it if the test fails
    return code, json.loads(out) if out.strip().startswith("[") else []


def current_of(root: Path) -> str | None:
    link = root / "current"
    return str(link.readlink()) if link.is_symlink() else None


@pytest.fixture
def bundles(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, files: dict[str, bytes], **kwargs: Any) -> Path:
        return make_bundle(tmp_path / name, files, **kwargs)

    return make


def first_deploy(
    sshd_factory: Callable[..., SshServer],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> tuple[Path, bytes, list[str], dict[str, Any]]:
    """A bundle with a 3 MB weights file deployed to a fresh device "dev": its root, the weights,
    the deploy arguments and the report."""
    sshd_factory("dev")
    root = tmp_path / "device-root"
    big = os.urandom(3 * MB)
    bundle = bundles("b1", {"model.onnx.data": big, "genai_config.json": b"{}"})
    args = ["--host", "dev", "--root", str(root), "--bundle", str(bundle)]
    code, [report] = deploy(capsys, *args)
    assert code == 0, report
    return root, big, args, report


def test_first_deploy_then_no_change_then_one_changed_file(
    sshd_factory: Callable[..., SshServer],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, big, args, report = first_deploy(sshd_factory, bundles, tmp_path, capsys)
    assert report["status"] == "deployed"
    assert report["bytes_sent"] == report["bytes_total"]
    assert current_of(root) == f"releases/{report['release']}"
    assert (root / "current" / "engine" / "model.onnx.data").read_bytes() == big

    code, [again] = deploy(capsys, *args)
    assert (code, again["status"], again["bytes_sent"]) == (0, "no change", 0)

    second = bundles("b2", {"model.onnx.data": big, "genai_config.json": b'{"changed": 1}'})
    code, [changed] = deploy(capsys, "--host", "dev", "--root", str(root), "--bundle", str(second))
    assert code == 0
    manifest_size = (second / "manifest.json").stat().st_size
    assert changed["bytes_sent"] == len(b'{"changed": 1}') + manifest_size
    assert changed["files"]["link"] == 2  # the big file and prompts.json come from release 1
    assert changed["previous"] == report["release"]
    assert current_of(root) == f"releases/{changed['release']}"

    capsys.readouterr()
    assert run(["rollback", "--host", "dev", "--root", str(root)]) == 0
    assert current_of(root) == f"releases/{report['release']}"


def test_a_same_size_change_under_a_current_release_is_repaired_over_ssh(
    sshd_factory: Callable[..., SshServer],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, big, args, first = first_deploy(sshd_factory, bundles, tmp_path, capsys)
    record = root / ".fingerprints" / first["release"]
    assert len(record.read_text().splitlines()) == 4  # written as the device verified the files
    code, [again] = deploy(capsys, *args)
    assert (code, again["status"], again["files"]["keep"]) == (0, "no change", 4)

    weights = root / "current" / "engine" / "model.onnx.data"
    before = weights.stat()
    with weights.open("r+b") as file:  # one byte flipped in place: same size, same inode
        file.seek(MB)
        file.write(bytes([big[MB] ^ 0xFF]))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    code, [repaired] = deploy(capsys, *args)
    assert (code, repaired["status"], repaired["files"]["delta"]) == (0, "deployed", 1)
    # Rebuilt from the broken copy: one 4 KiB block and the hash lists travel, not 3 MB.
    assert 4096 < repaired["bytes_sent"] < 20_000
    assert repaired["release"].startswith(first["release"] + "~")
    assert (root / "current" / "engine" / "model.onnx.data").read_bytes() == big
    assert not record.exists()  # went with the broken copy
    code, [settled] = deploy(capsys, *args)
    assert (code, settled["status"]) == (0, "no change")


def test_targets_detect_over_ssh(
    sshd_factory: Callable[..., SshServer], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sshd_factory("dev")
    capsys.readouterr()
    assert run(["targets", "detect", "dev", "--root", str(tmp_path), "--json"]) == 0
    detected = json.loads(capsys.readouterr().out)
    assert detected["facts"]["arch"] == os.uname().machine
    assert detected["facts"]["root"] == str(tmp_path)
    assert detected["target"] == {"x86_64": "host-x86_64-cpu"}.get(
        os.uname().machine, "generic-aarch64-cpu"
    )


def test_incompatible_bundle_is_refused_before_any_byte(
    sshd_factory: Callable[..., SshServer],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sshd_factory("dev")
    orin = {"name": "jetson-agx-orin-64gb", "arch": "aarch64", "cuda_arch": "87"}
    bundle = bundles("orin", {"model.onnx": b"x"}, target=orin)
    root = tmp_path / "device-root"
    code = run(["deploy", "--host", "dev", "--root", str(root), "--bundle", str(bundle)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == ExitCode.REMOTE
    assert "bundle is for aarch64 (target jetson-agx-orin-64gb)" in err
    assert "needs an NVIDIA GPU (SM87" in err
    assert not root.exists()


def test_changed_host_key_is_refused_with_the_fix(
    sshd_factory: Callable[..., SshServer],
    ssh_client: SshClientSide,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = sshd_factory("dev")
    open_connector(parse_host("dev")).close()  # first contact: accept-new records the key
    assert f"[127.0.0.1]:{server.port}" in ssh_client.known_hosts.read_text()
    server.reinstall()
    capsys.readouterr()
    assert run(["targets", "detect", "dev"]) == ExitCode.REMOTE
    err = " ".join(capsys.readouterr().err.split())
    assert "host key changed" in err
    assert f"ssh-keygen -f {ssh_client.known_hosts} -R '[127.0.0.1]:{server.port}'" in err


def test_unreachable_host_and_failed_auth_are_one_line_errors(
    sshd_factory: Callable[..., SshServer],
    ssh_client: SshClientSide,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = sshd_factory("dev")
    server.stop()
    capsys.readouterr()
    assert run(["targets", "detect", "dev"]) == ExitCode.REMOTE
    assert "unreachable" in capsys.readouterr().err

    server.start()
    other_key = tmp_path / "stranger"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    ssh_client.config.write_text(
        ssh_client.config.read_text().replace(str(ssh_client.key), str(other_key))
    )
    assert run(["targets", "detect", "dev"]) == ExitCode.REMOTE
    err = capsys.readouterr().err
    assert "authentication failed for user root" in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def test_full_disk_refuses_and_leaves_current_untouched(
    sshd_factory: Callable[..., SshServer],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with mounted_tmpfs(tmp_path / "small-disk", "size=24m") as root:
        sshd_factory("dev")
        small = bundles("small", {"model.onnx": os.urandom(MB)})
        code, [first] = deploy(capsys, "--host", "dev", "--root", str(root), "--bundle", str(small))
        assert code == 0, first
        large = bundles("large", {"model.onnx": os.urandom(12 * MB)})
        code, [refused] = deploy(
            capsys, "--host", "dev", "--root", str(root), "--bundle", str(large)
        )
        assert code == ExitCode.REMOTE
        assert "not enough disk" in refused["error"]
        assert current_of(root) == f"releases/{first['release']}"
        assert sorted(p.name for p in (root / "releases").iterdir()) == [first["release"]]


def _watch_partial(
    root: Path, name: str, at_least: int, then: Callable[[], None]
) -> threading.Thread:
    """Call ``then`` once some partial release's ``name`` holds ``at_least`` bytes."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for partial in (root / "releases").glob("*.partial"):
                file = partial / "engine" / name
                if file.is_file() and file.stat().st_size >= at_least:
                    then()
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_transfer_cut_mid_file_resumes_without_resending(
    sshd_factory: Callable[..., SshServer],
    netns_factory: Callable[[], NetnsDevice],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require(nft_available(), "nft (nftables) is missing")
    device = netns_factory()
    sshd_factory("wifi", address=device.device_address, port=2222, netns=device.name)
    device.limit_rate("20mbit")
    root = tmp_path / "device-root"
    size = 6 * MB
    bundle = bundles("b", {"model.onnx.data": os.urandom(size), "config.json": b"{}"})
    args = ["--host", "wifi", "--root", str(root), "--bundle", str(bundle), "--timeout", "3"]

    watcher = _watch_partial(root, "model.onnx.data", size // 2, device.cut)
    code, [cut] = deploy(capsys, *args)
    watcher.join()
    assert code == ExitCode.REMOTE
    assert "connection lost" in cut["error"] or "timed out" in cut["error"]
    assert current_of(root) is None  # never switched to a partial release
    partial = next((root / "releases").glob("*.partial")) / "engine" / "model.onnx.data"
    already = partial.stat().st_size
    assert size // 2 <= already < size

    device.heal()
    code, [resumed] = deploy(capsys, *args)
    assert code == 0, resumed
    assert resumed["files"]["resume"] == 1
    # Only what was missing travelled, plus the small files written after the big one.
    assert resumed["bytes_sent"] <= resumed["bytes_total"] - already
    assert current_of(root) == f"releases/{resumed['release']}"
    final = root / "current" / "engine" / "model.onnx.data"
    assert final.read_bytes() == (bundle / "engine" / "model.onnx.data").read_bytes()


def test_three_devices_at_once_one_dies_mid_way(
    sshd_factory: Callable[..., SshServer],
    netns_factory: Callable[[], NetnsDevice],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    devices = []
    for index in range(3):
        device = netns_factory()
        device.limit_rate("20mbit")
        sshd_factory(f"d{index}", address=device.device_address, port=2222, netns=device.name)
        devices.append(device)
    size = 4 * MB
    bundle = bundles("b", {"model.onnx.data": os.urandom(size)})
    hosts = [f"d{i}:{tmp_path / f'root{i}'}" for i in range(3)]
    _watch_partial(tmp_path / "root1", "model.onnx.data", size // 3, devices[1].power_off)
    code, outcomes = deploy(
        capsys,
        *(a for h in hosts for a in ("--host", h)),
        "--bundle",
        str(bundle),
        "--timeout",
        "3",
    )
    assert code == ExitCode.REMOTE, outcomes
    assert [o["ok"] for o in outcomes] == [True, False, True], outcomes
    for index in (0, 2):
        root = tmp_path / f"root{index}"
        assert current_of(root) == f"releases/{outcomes[index]['release']}"
    assert current_of(tmp_path / "root1") is None


def _partial_size(root: Path, name: str) -> int:
    sizes = [p.stat().st_size for p in (root / "releases").glob(f"*.partial/engine/{name}")]
    return max(sizes, default=0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_mid_upload_stops_at_once_and_a_rerun_resumes(
    signum: int,
    sshd_factory: Callable[..., SshServer],
    netns_factory: Callable[[], NetnsDevice],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real `edgepack deploy` process over a real sshd on a rate-limited link."""
    device = netns_factory()
    sshd_factory("slow", address=device.device_address, port=2222, netns=device.name)
    device.limit_rate("16mbit")
    root = tmp_path / "device-root"
    first = bundles("first", {"model.onnx.data": b"old" * 1000})
    code, [old] = deploy(capsys, "--host", "slow", "--root", str(root), "--bundle", str(first))
    assert code == 0, old
    size = 8 * MB
    bundle = bundles("big", {"model.onnx.data": os.urandom(size)})
    args = ["deploy", "--host", "slow", "--root", str(root), "--bundle", str(bundle)]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    # A terminal's Ctrl-C reaches a process whose SIGINT is the default; a test runner started as
    # a background job of a non-interactive shell passes it on ignored, and Python keeps that.
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepack", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while _partial_size(root, "model.onnx.data") < MB and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signum)
    sent_at = time.monotonic()
    # The upload has stopped when the device's copy stops growing (a loaded machine may take a
    # while longer to tear the process down; what is in flight still lands).
    size_seen, last_growth = _partial_size(root, "model.onnx.data"), sent_at
    deadline = sent_at + 60
    while (
        process.poll() is None or time.monotonic() < last_growth + 1
    ) and time.monotonic() < deadline:
        if (now := _partial_size(root, "model.onnx.data")) != size_seen:
            size_seen, last_growth = now, time.monotonic()
        time.sleep(0.01)
    _, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert last_growth - sent_at < 1.5, f"the upload went on {last_growth - sent_at:.1f} s"
    assert "interrupted" in err and "Aborted" not in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    assert current_of(root) == f"releases/{old['release']}"
    already = _partial_size(root, "model.onnx.data")
    assert MB <= already < size

    code, [resumed] = deploy(capsys, *args[1:])
    assert code == 0, resumed
    assert resumed["files"]["resume"] == 1
    assert resumed["bytes_sent"] <= resumed["bytes_total"] - already
    assert current_of(root) == f"releases/{resumed['release']}"
    final = root / "current" / "engine" / "model.onnx.data"
    assert final.read_bytes() == (bundle / "engine" / "model.onnx.data").read_bytes()


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_a_hostile_bundle_is_refused_over_ssh_and_nothing_leaves_the_release(
    kind: str,
    sshd_factory: Callable[..., SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sshd_factory("dev")
    victim = tmp_path / "x"
    victim.write_bytes(b"the user's own file")
    bundle = make_hostile_bundle(tmp_path / "deep" / "er" / "bundle", kind, victim)
    root = tmp_path / "device-root"
    code, outcomes = deploy(capsys, "--host", "dev", "--root", str(root), "--bundle", str(bundle))
    assert code == ExitCode.BUNDLE_INVALID, outcomes
    assert not root.exists()
    assert victim.read_bytes() == b"the user's own file"
    strays = [p for p in tmp_path.rglob("x") if p != victim and "deep" not in p.parts]
    assert strays == []


def test_a_read_only_device_is_a_refusal_not_a_lost_connection(
    sshd_factory: Callable[..., SshServer],
    bundles: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with mounted_tmpfs(tmp_path / "read-only", "ro,size=4m") as root:
        sshd_factory("dev")
        bundle = bundles("b", {"model.onnx": b"m"})
        code, [refused] = deploy(capsys, "--host", f"dev:{root}/edgepack", "--bundle", str(bundle))
        assert code == ExitCode.DEVICE_DENIED, refused
        assert "the device refused" in refused["error"] and "Read-only" in refused["error"]
        assert "connection lost" not in refused["error"] and "--root" in refused["hint"]
