"""Deploy logic through the local connector (a directory standing in for the device)."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from edgepack.bundle import verify_bundle, write_bundle
from edgepack.cache import FileHashIndex
from edgepack.errors import EdgepackError, ExitCode, RemoteError
from edgepack.remote.connector import CommandResult, LocalConnector
from edgepack.remote.current import check_current
from edgepack.remote.facts import FACTS_SCRIPT
from edgepack.remote.fleet import on_each_host
from edgepack.remote.hosts import HostSpec, parse_host
from edgepack.remote.layout import LOCK
from edgepack.remote.switch import rollback
from edgepack.remote.sync import (
    DeployOptions,
    DeployReport,
    SilentProgress,
    deploy,
)
from edgepack.remote.sync_plan import LocalBundle
from edgepack.targets import TargetRegistry
from tests.integration.conftest import make_bundle
from tests.unit.file_edits import rewrite_keeping_size_and_mtime
from tests.unit.local_deploy import local_deploy

MB = 1_000_000


class Recording(LocalConnector):
    """The local device, keeping the argument vector of every command it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[tuple[str, ...]] = []

    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        self.commands.append(tuple(argv))
        return super().execute(argv, stdin, timeout)

    def hashed(self) -> list[str]:
        """Every path a sha256sum command was given: the fingerprinting script's in "hash" mode
        (after $0, the root, the directory and the mode), the others' after the directory."""
        paths: list[str] = []
        for command in (c for c in self.commands if "sha256sum" in c[2]):
            if "clock()" in command[2]:
                paths += command[7:] if command[6] == "hash" else []
            else:
                paths += command[5:]
        return paths


def _current(root: Path) -> str:
    return str((root / "current").readlink())


def _cut_deploy(tmp_path: Path, size: int) -> tuple[bytes, Path, Path, Path]:
    """A bundle of one random ``size``-byte engine file, the device's root, and the engine folder
    of the bundle's partial release there (empty: the test writes what the cut left)."""
    data = os.urandom(size)
    bundle = make_bundle(tmp_path / "b", {"weights.bin": data})
    root = tmp_path / "dev"
    partial = root / "releases" / f"{verify_bundle(bundle).short_id}.partial" / "engine"
    partial.mkdir(parents=True)
    return data, bundle, root, partial


def test_resume_uses_a_matching_prefix_and_restarts_a_corrupt_one(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    data, bundle, root, partial = _cut_deploy(tmp_path, 2 * MB)
    (partial / "weights.bin").write_bytes(data[: MB + 123])
    report = local_deploy(bundle, root, registry)
    assert report.files["resume"] == 1
    assert report.bytes_sent == report.bytes_total - (MB + 123)
    assert (root / "current" / "engine" / "weights.bin").read_bytes() == data

    other = make_bundle(tmp_path / "c", {"weights.bin": data[::-1]})
    partial = root / "releases" / f"{verify_bundle(other).short_id}.partial" / "engine"
    partial.mkdir(parents=True)
    (partial / "weights.bin").write_bytes(b"garbage" * 1000)  # not the bundle's first bytes
    (partial / "stray.tmp").write_bytes(b"left over")
    report = local_deploy(other, root, registry)
    assert report.files["resume"] == 0 and report.files["upload"] >= 1
    assert not (root / "current" / "engine" / "stray.tmp").exists()
    verify_bundle(root / "current")  # the release on the device is a valid bundle


def test_a_resumed_file_whose_sha256_differs_is_sent_again_whole(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    data, bundle, root, partial = _cut_deploy(tmp_path, 3 * MB)
    # Its last MiB is the bundle's, so it is resumed; a byte before that is not.
    prefix = bytearray(data[: 2 * MB + 5])
    prefix[10] ^= 0xFF
    (partial / "weights.bin").write_bytes(prefix)
    report = local_deploy(bundle, root, registry)
    assert report.status == "deployed"
    weights = next(c for c in report.changes if c["path"] == "engine/weights.bin")
    assert weights["action"] == "upload" and report.files["resume"] == 0
    assert report.bytes_sent == report.bytes_total + (MB - 5)  # the resumed tail, then whole
    assert (root / "current" / "engine" / "weights.bin").read_bytes() == data
    fast = local_deploy(bundle, root, registry)  # its record holds the good copy's fingerprint
    assert fast.status == "no change"


def test_dry_run_changes_nothing(tmp_path: Path, registry: TargetRegistry) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w" * 1000})
    root = tmp_path / "dev"
    report = local_deploy(bundle, root, registry, dry_run=True)
    assert report.status == "dry run"
    assert {c["action"] for c in report.changes} == {"upload"}
    assert not (root / "releases").exists()


def test_keep_prunes_old_releases_but_never_current_or_previous(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    root = tmp_path / "dev"
    releases = []
    for index in range(4):
        bundle = make_bundle(tmp_path / f"b{index}", {"weights.bin": bytes([index]) * 100})
        releases.append(local_deploy(bundle, root, registry, keep=2).release)
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted(releases[2:])
    with LocalConnector() as device:
        assert rollback(device, str(root)) == (releases[3], releases[2])
        assert rollback(device, str(root)) == (releases[2], releases[3])
        with pytest.raises(RemoteError, match="is not on the device"):
            rollback(device, str(root), to=releases[0])


def test_a_live_lock_is_respected_and_a_stale_one_taken_over(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w"})
    root = tmp_path / "dev"
    (root / LOCK).mkdir(parents=True)
    owner = {"host": "other-laptop", "pid": 1, "token": "x", "time": 0}
    (root / LOCK / "owner").write_text(json.dumps(owner))
    with pytest.raises(RemoteError, match="another deploy holds"):
        local_deploy(bundle, root, registry)
    assert local_deploy(bundle, root, registry, break_lock=True).status == "deployed"

    dead = {"host": socket.gethostname(), "pid": 2**22 + 12345, "token": "y", "time": 0}
    (root / LOCK).mkdir()
    (root / LOCK / "owner").write_text(json.dumps(dead))
    assert local_deploy(bundle, root, registry).status == "no change"
    assert not (root / LOCK).exists()


def test_a_corrupted_current_release_is_repaired(tmp_path: Path, registry: TargetRegistry) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w" * 5000, "cfg.json": b"{}"})
    root = tmp_path / "dev"
    first = local_deploy(bundle, root, registry)
    (root / "current" / "engine" / "weights.bin").write_bytes(b"bitrot")
    repaired = local_deploy(bundle, root, registry)
    assert repaired.status == "deployed"
    assert repaired.bytes_sent == 5000
    # Repaired beside the broken copy, which goes once `current` has moved to the repaired one.
    assert repaired.release.startswith(first.release + "~")
    assert _current(root) == f"releases/{repaired.release}"
    assert sorted(p.name for p in (root / "releases").iterdir()) == [repaired.release]
    verify_bundle(root / "current")
    assert local_deploy(bundle, root, registry).status == "no change"


class _FailingUploads(LocalConnector):
    """A device whose uploads fail after the first chunk (the link going away)."""

    def put(self, local: Path, remote: str, offset: int, on_bytes: object) -> int:
        raise RemoteError(f"{self.label}: uploading {remote}: connection lost (test)")


def test_a_failed_repair_never_leaves_current_pointing_at_nothing(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w" * 5000, "cfg.json": b"{}"})
    root = tmp_path / "dev"
    first = local_deploy(bundle, root, registry)
    (root / "current" / "engine" / "weights.bin").write_bytes(b"bitrot")
    manifest = verify_bundle(bundle)
    with _FailingUploads() as device, pytest.raises(RemoteError, match="connection lost"):
        deploy(device, bundle, manifest, DeployOptions(root=str(root)), registry, SilentProgress())
    assert _current(root) == f"releases/{first.release}"
    assert (root / "current" / "engine" / "cfg.json").read_bytes() == b"{}"


def test_a_host_whose_work_escapes_with_a_network_error_reports_a_remote_failure() -> None:
    hosts = [parse_host("a"), parse_host("b"), parse_host("c")]

    def work(spec: HostSpec) -> str:
        if spec.label == "a":
            raise ConnectionResetError(104, "Connection reset by peer")
        if spec.label == "b":
            raise KeyError("release")
        return "done"

    (_, lost), (_, bug), (_, fine) = on_each_host(hosts, work)
    assert isinstance(lost, RemoteError) and lost.exit_code == ExitCode.REMOTE
    assert "a: connection lost" in lost.message
    assert isinstance(bug, EdgepackError) and bug.exit_code == ExitCode.FAILURE
    assert "b: internal error: KeyError" in bug.message
    assert fine == "done"


def test_executables_arrive_executable(tmp_path: Path, registry: TargetRegistry) -> None:
    source = tmp_path / "runtime-src"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "tool").write_bytes(b"#!/bin/sh\necho ran\n")
    (source / "bin" / "tool").chmod(0o755)
    (source / "notes.txt").write_bytes(b"data")
    bundle = make_bundle(tmp_path / "bundle", {"model.onnx": b"x"})
    manifest = verify_bundle(bundle)
    sealed = write_bundle(
        tmp_path / "with-runtime",
        manifest.model_copy(update={"files": []}),
        {"engine": bundle / "engine", "prompts.json": bundle / "prompts.json", "runtime": source},
        FileHashIndex(tmp_path / "hashes.json"),
    )
    executable = {record.path: record.executable for record in sealed.files}
    assert executable["runtime/bin/tool"] and not executable["runtime/notes.txt"]
    report = local_deploy(tmp_path / "with-runtime", tmp_path / "device", registry)
    deployed = tmp_path / "device" / "releases" / report.release / "runtime"
    assert os.access(deployed / "bin" / "tool", os.X_OK)
    assert not os.access(deployed / "notes.txt", os.X_OK)
    device = Recording()  # the modes were set before the hashes and their fingerprints
    again = local_deploy(tmp_path / "with-runtime", tmp_path / "device", registry, device)
    assert again.status == "no change"
    assert len(device.commands) == 1


def test_a_lock_whose_owner_record_a_power_loss_emptied_is_taken_over_once_old(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w"})
    root = tmp_path / "dev"
    (root / LOCK).mkdir(parents=True)
    (root / LOCK / "owner").write_bytes(b"")  # the record's data never reached the disk
    with pytest.raises(RemoteError, match="another deploy holds"):
        local_deploy(bundle, root, registry)  # just made: its owner may be writing the record now
    os.utime(root / LOCK, (0, 0))
    assert local_deploy(bundle, root, registry).status == "deployed"
    assert not (root / LOCK).exists()


def _same_report(first: DeployReport, second: DeployReport) -> None:
    assert {**first.as_dict(), "seconds": 0} == {**second.as_dict(), "seconds": 0}


def test_a_current_bundle_is_recognised_in_one_round_trip_that_hashes_nothing(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w" * 5000, "cfg.json": b"{}"})
    root = tmp_path / "dev"
    first = local_deploy(bundle, root, registry)
    record = root / ".fingerprints" / first.release
    assert len(record.read_text().splitlines()) == 4  # the three files and manifest.json
    device = Recording()
    fast = local_deploy(bundle, root, registry, device)  # right after the deploy that verified them
    assert len(device.commands) == 1 and device.hashed() == []
    assert fast.files == {"keep": 4, "link": 0, "resume": 0, "delta": 0, "upload": 0}
    assert not (root / LOCK).exists()

    record.unlink()
    full = Recording()
    slow = local_deploy(bundle, root, registry, full)  # the whole deploy, which records them again
    assert slow.status == "no change" and "engine/weights.bin" in full.hashed()
    _same_report(fast, slow)
    again = Recording()
    _same_report(local_deploy(bundle, root, registry, again), slow)
    assert len(again.commands) == 1


def test_a_same_size_change_on_the_device_is_found_and_repaired_as_before(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w" * 5000, "cfg.json": b"{}"})
    root = tmp_path / "dev"
    first = local_deploy(bundle, root, registry)
    assert local_deploy(bundle, root, registry).status == "no change"  # recorded by now
    rewrite_keeping_size_and_mtime(root / "current" / "engine" / "weights.bin", b"x" * 5000)
    device = Recording()
    repaired = local_deploy(bundle, root, registry, device)
    assert "engine/weights.bin" in device.hashed()
    assert (repaired.status, repaired.bytes_sent) == ("deployed", 5000)
    assert repaired.release.startswith(first.release + "~")
    verify_bundle(root / "current")
    # The broken copy's record went with it; the repaired copy's was written as it was verified.
    assert [p.name for p in (root / ".fingerprints").iterdir()] == [repaired.release]
    # Removing the broken copy moved the link counts, so the ctimes, of the files the repaired
    # copy shares with it: one full deploy hashes those again, and the next is one round trip.
    assert local_deploy(bundle, root, registry).status == "no change"
    device = Recording()
    assert local_deploy(bundle, root, registry, device).status == "no change"
    assert len(device.commands) == 1


def test_a_recorded_sha256_that_is_not_the_manifests_is_hashed_again(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w" * 5000, "cfg.json": b"{}"})
    root = tmp_path / "dev"
    release = local_deploy(bundle, root, registry).release
    local_deploy(bundle, root, registry)
    record = root / ".fingerprints" / release
    good = record.read_text()
    wrong = "".join(
        f"{line.replace(line.split(' ')[4], '0' * 64)}\n"
        if line.endswith(" engine/weights.bin")
        else f"{line}\n"
        for line in good.splitlines()
    )
    assert wrong != good
    record.write_text(wrong)  # the stat fields still match the file
    device = Recording()
    report = local_deploy(bundle, root, registry, device)
    assert report.status == "no change" and len(device.commands) > 1
    assert device.hashed() == ["engine/weights.bin"]
    assert record.read_text() == good


def test_the_shortcut_is_not_taken_for_a_release_that_is_not_current_nor_on_a_dry_run(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    root = tmp_path / "dev"
    one = make_bundle(tmp_path / "one", {"weights.bin": b"1" * 100})
    two = make_bundle(tmp_path / "two", {"weights.bin": b"2" * 100})
    first = local_deploy(one, root, registry)
    local_deploy(one, root, registry)  # one's record is complete
    second = local_deploy(two, root, registry)
    assert second.status == "deployed"
    back = local_deploy(one, root, registry)  # one's record still matches, but current is two
    assert (back.status, back.previous) == ("switched", second.release)
    assert _current(root) == f"releases/{first.release}"
    local_deploy(one, root, registry)
    dry = Recording()
    assert local_deploy(one, root, registry, dry, dry_run=True).status == "dry run"
    assert len(dry.commands) > 1


def _weights_kept_config_changed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two bundles sharing weights.bin, their cfg.json changed, and the device's root."""
    files = {"weights.bin": b"w" * 5000, "cfg.json": b"{}"}
    first = make_bundle(tmp_path / "a", files)
    second = make_bundle(tmp_path / "b", files | {"cfg.json": b'{"changed": 1}'})
    return first, second, tmp_path / "dev"


def test_files_linked_from_a_fingerprinted_release_are_not_read_again(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    first, second, root = _weights_kept_config_changed(tmp_path)
    local_deploy(first, root, registry)
    device = Recording()
    report = local_deploy(second, root, registry, device)
    assert report.files == {"keep": 0, "link": 2, "resume": 0, "upload": 2, "delta": 0}
    assert sorted(device.hashed()) == ["engine/cfg.json", "manifest.json"]
    assert not any(c[2] == FACTS_SCRIPT for c in device.commands)  # the current check had them
    verify_bundle(root / "current")
    again = Recording()
    assert local_deploy(second, root, registry, again).status == "no change"
    assert len(again.commands) == 1  # the links were recorded as they were checked


def test_a_link_whose_source_moved_since_its_record_is_read_again(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    first, second, root = _weights_kept_config_changed(tmp_path)
    release = local_deploy(first, root, registry).release
    rewrite_keeping_size_and_mtime(root / "releases" / release / "engine" / "weights.bin",
                                   b"x" * 5000)  # fmt: skip
    device = Recording()
    with pytest.raises(RemoteError, match="sha256 differs"):
        local_deploy(second, root, registry, device)
    assert "engine/weights.bin" in device.hashed()
    assert _current(root) == f"releases/{release}"


def test_pruning_a_release_that_shares_files_leaves_the_current_record_usable(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    files = {"weights.bin": b"w" * 5000, "cfg.json": b"{}"}
    bundles = [make_bundle(tmp_path / f"b{n}", files | {"cfg.json": b"%d" % n}) for n in range(4)]
    root = tmp_path / "dev"
    for bundle in bundles[:2]:
        local_deploy(bundle, root, registry, keep=2)
    third = local_deploy(bundles[2], root, registry, keep=2)
    assert len(third.pruned) == 1  # shared weights.bin with the new one: its ctime moved
    device = Recording()
    assert local_deploy(bundles[2], root, registry, device, keep=2).status == "no change"
    assert len(device.commands) == 1
    fourth = Recording()
    local_deploy(bundles[3], root, registry, fourth, keep=2)
    assert "engine/weights.bin" not in fourth.hashed()


def test_going_back_to_a_release_that_lent_its_files_reads_none_of_them(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    first, second, root = _weights_kept_config_changed(tmp_path)
    release = local_deploy(first, root, registry).release
    local_deploy(second, root, registry)  # links weights.bin: its ctime moves under the first
    device = Recording()
    report = local_deploy(first, root, registry, device)
    assert report.status == "switched" and _current(root) == f"releases/{release}"
    assert device.hashed() == []  # the second release's record still describes weights.bin
    again = Recording()
    assert local_deploy(first, root, registry, again).status == "no change"
    assert len(again.commands) == 1


def test_a_peer_record_of_a_file_changed_since_is_not_trusted(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    first, second, root = _weights_kept_config_changed(tmp_path)
    release = local_deploy(first, root, registry).release
    local_deploy(second, root, registry)
    rewrite_keeping_size_and_mtime(root / "releases" / release / "engine" / "weights.bin",
                                   b"x" * 5000)  # fmt: skip
    device = Recording()
    with pytest.raises(RemoteError, match="sha256 differs"):
        local_deploy(first, root, registry, device)
    assert "engine/weights.bin" in device.hashed()


@pytest.mark.parametrize(("backend", "asked"), [("ort", False), ("trtllm", True)])
def test_the_device_python_is_asked_only_where_the_deploy_uses_its_answer(
    tmp_path: Path, backend: str, asked: bool
) -> None:
    """python3 through a pyenv shim costs 0.1-0.2 s: asked for a TensorRT version pip may have
    installed (or a venv to build), not for a CPU bundle that carries no wheels."""
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"w" * 100})
    manifest = verify_bundle(bundle)
    manifest = manifest.model_copy(update={"recipe": {**manifest.recipe, "backend": backend}})
    local = LocalBundle(bundle, manifest, [])
    check = check_current(LocalConnector(), local, str(tmp_path / "new-root"), venv=True)
    assert check.current is None and check.facts is not None
    assert (check.facts.python_version is not None) is asked


def test_unchanged_files_are_linked_with_one_command_a_directory(
    tmp_path: Path, registry: TargetRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names with spaces, a nested directory, the bundle's top and a file linked under a new name
    (same content) all arrive; `ln` runs once a directory, not once a file."""
    files = {"weights.bin": b"w" * 5000, "tok.json": b"{}", "sub dir/a b.bin": b"a" * 300,
             "sub dir/c.bin": b"c" * 300, "cfg.json": b"{}1"}  # fmt: skip
    first = make_bundle(tmp_path / "a", files)
    renamed = files | {"cfg.json": b'{"changed": 1}', "copy of weights.bin": b"w" * 5000}
    second = make_bundle(tmp_path / "b", renamed)
    root = tmp_path / "dev"
    local_deploy(first, root, registry)
    shims, log = tmp_path / "shims", tmp_path / "ln.log"
    shims.mkdir()
    (shims / "ln").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {shutil.which("ln")} "$@"\n')
    (shims / "ln").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    report = local_deploy(second, root, registry)
    assert report.files["link"] == 6
    calls = [c for c in log.read_text().splitlines() if c.startswith("-f ")]  # not the switch's
    assert len(calls) == 4, calls  # engine/, engine/sub dir/, the top, the renamed file
    assert any("a b.bin" in call and "c.bin" in call for call in calls)
    verify_bundle(root / "current")
    engine = root / "current" / "engine"
    assert (engine / "copy of weights.bin").stat().st_ino == (engine / "weights.bin").stat().st_ino
