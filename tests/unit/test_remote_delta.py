"""Deploy's block delta through the local connector: a big file changed in a few places is
rebuilt on the device from the copy it has, and only the blocks that differ travel."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from edgepack.bundle import verify_bundle
from edgepack.errors import RemoteError
from edgepack.remote.connector import ByteCallback, CommandResult, LocalConnector
from edgepack.remote.delta import COARSE_SCRIPT, FINE_BLOCK, HASH_CHARS, coarse_block
from edgepack.remote.sync import DeployReport
from edgepack.targets import TargetRegistry
from tests.integration.conftest import make_bundle
from tests.unit.file_edits import flipped
from tests.unit.local_deploy import local_deploy

MB = 1_000_000
WEIGHTS = "engine/weights.bin"
LINE = HASH_CHARS + 1


def _deploy_two(
    tmp_path: Path,
    registry: TargetRegistry,
    old: bytes,
    new: bytes,
    device: LocalConnector | None = None,
) -> tuple[Path, DeployReport, DeployReport]:
    root = tmp_path / "dev"
    first = local_deploy(make_bundle(tmp_path / "b1", {"weights.bin": old}), root, registry)
    second = local_deploy(make_bundle(tmp_path / "b2", {"weights.bin": new}), root, registry,
                          device)  # fmt: skip
    return root, first, second


def _hash_lists_bound(size: int, fine_blocks: int) -> int:
    """The most a delta's hash lists can cost: every coarse hash, and the fine hashes of the
    coarse blocks named."""
    coarse = -(-size // coarse_block(size))
    return (coarse + fine_blocks) * LINE + 64


def _manifest_bytes(report: DeployReport) -> int:
    return int(next(c["bytes_to_send"] for c in report.changes if c["path"] == "manifest.json"))


def test_one_changed_byte_sends_one_fine_block_and_leaves_the_old_release_alone(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    old = os.urandom(6 * MB)
    new = flipped(old, 3 * MB + 17)
    root = tmp_path / "dev"
    first = local_deploy(make_bundle(tmp_path / "b1", {"weights.bin": old}), root, registry)
    before = (root / "releases" / first.release / WEIGHTS).stat()
    second = local_deploy(make_bundle(tmp_path / "b2", {"weights.bin": new}), root, registry)

    assert second.files["delta"] == 1 and second.files["upload"] == 1  # the manifest
    [change] = [c for c in second.changes if c["action"] == "delta"]
    assert change["base"] == str(root / "releases" / first.release / WEIGHTS)
    assert change["ranges"] == 1
    payload = second.bytes_sent - _manifest_bytes(second)
    assert FINE_BLOCK < payload <= FINE_BLOCK + _hash_lists_bound(len(new), 256)
    assert second.bytes_sent == second.bytes_to_send
    rebuilt = root / "current" / WEIGHTS
    assert hashlib.sha256(rebuilt.read_bytes()).digest() == hashlib.sha256(new).digest()
    kept = root / "releases" / first.release / WEIGHTS
    assert kept.stat().st_ino == before.st_ino != rebuilt.stat().st_ino
    assert kept.stat().st_mtime_ns == before.st_mtime_ns and kept.read_bytes() == old
    verify_bundle(root / "current")


@pytest.mark.parametrize(
    ("old_size", "new_size"),
    [(3 * MB, 3 * MB + 12_345), (3 * MB + 12_345, 2 * MB + 7)],
    ids=["grows", "shrinks"],
)
def test_a_file_that_grows_or_shrinks_is_rebuilt_exactly(
    tmp_path: Path, registry: TargetRegistry, old_size: int, new_size: int
) -> None:
    common = os.urandom(max(old_size, new_size))
    old, new = common[:old_size], flipped(common[:new_size], MB + 5)
    root, _, second = _deploy_two(tmp_path, registry, old, new)
    assert second.files["delta"] == 1
    assert (root / "current" / WEIGHTS).read_bytes() == new
    grown = max(0, new_size - old_size)
    payload = second.bytes_sent - _manifest_bytes(second)
    # The flipped fine block, the tail past the old end, the old last fine block (when it grew
    # or ended elsewhere) and the blocks of the last coarse block that now ends sooner.
    assert payload <= grown + 3 * FINE_BLOCK + _hash_lists_bound(new_size, 2 * 256)
    assert payload < new_size // 10


def test_a_change_in_the_last_short_block(tmp_path: Path, registry: TargetRegistry) -> None:
    old = os.urandom(3 * MB + 1001)
    new = flipped(old, len(old) - 1)
    root, _, second = _deploy_two(tmp_path, registry, old, new)
    assert [c["ranges"] for c in second.changes if c["action"] == "delta"] == [1]
    payload = second.bytes_sent - _manifest_bytes(second)
    tail = len(new) % FINE_BLOCK  # the last fine block: shorter than the others
    assert tail < payload <= tail + _hash_lists_bound(len(new), 256)
    assert (root / "current" / WEIGHTS).read_bytes() == new


def test_without_a_usable_copy_the_file_is_uploaded(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    # Nothing in common with the device's copy: every coarse block differs.
    root, _, unrelated = _deploy_two(tmp_path, registry, os.urandom(2 * MB), os.urandom(2 * MB))
    assert (unrelated.files["delta"], unrelated.files["upload"]) == (0, 2)
    assert unrelated.bytes_sent == unrelated.bytes_total - len(b'{"prompts": [{"id": "p1", '
                                                               b'"text": "Hello"}]}')  # fmt: skip
    # A small file is sent whole; so is one whose copy is gone.
    small = local_deploy(make_bundle(tmp_path / "b3", {"weights.bin": os.urandom(MB // 2)}),
                         root, registry)  # fmt: skip
    assert small.files["delta"] == 0
    shutil.rmtree(root / "releases" / small.release)
    for release in (root / "releases").iterdir():
        (release / WEIGHTS).unlink()
    again = local_deploy(make_bundle(tmp_path / "b4", {"weights.bin": os.urandom(2 * MB)}),
                         root, registry)  # fmt: skip
    assert again.files["delta"] == 0
    assert (root / "current" / WEIGHTS).stat().st_size == 2 * MB


class _Hashing(LocalConnector):
    """Keeps what the device's coarse hash command printed."""

    def __init__(self) -> None:
        super().__init__()
        self.coarse: list[str] = []

    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        result = super().execute(argv, stdin, timeout)
        if len(argv) > 2 and argv[2] == COARSE_SCRIPT:
            self.coarse.append(result.stdout)
        return result


def test_a_big_unrelated_copy_is_not_hashed_whole_and_a_related_one_is(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    """Eight sample blocks decide: none at the same place on the device, no delta."""
    size = 12 * MB
    current = os.urandom(size)
    device = _Hashing()
    root, _, unrelated = _deploy_two(tmp_path, registry, os.urandom(size), current, device)
    assert unrelated.files["delta"] == 0
    assert device.coarse == [f"={size}\n"]
    device.coarse.clear()
    changed = flipped(current, 7)
    related = local_deploy(make_bundle(tmp_path / "b3", {"weights.bin": changed}), root, registry,
                           device)  # fmt: skip
    assert related.files["delta"] == 1
    assert len(device.coarse[0].splitlines()) == 1 + -(-size // coarse_block(size))


class _NoSplit(LocalConnector):
    """A device without `split` (the coarse hashes come from a dd loop; no fine level)."""

    def __init__(self, bin_dir: Path) -> None:
        super().__init__()
        self.bin_dir = bin_dir
        for folder in ("/usr/bin", "/bin"):
            for tool in Path(folder).iterdir():
                link = bin_dir / tool.name
                if tool.name != "split" and not link.exists():
                    link.symlink_to(tool)

    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        return super().execute(["env", f"PATH={self.bin_dir}", *argv], stdin, timeout)


def test_a_device_without_split_gets_whole_coarse_blocks(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    (tmp_path / "bin").mkdir()
    old = os.urandom(4 * MB)
    new = flipped(old, 2 * MB + 3)
    root, _, second = _deploy_two(tmp_path, registry, old, new, _NoSplit(tmp_path / "bin"))
    assert second.files["delta"] == 1
    payload = second.bytes_sent - _manifest_bytes(second)
    assert coarse_block(len(new)) <= payload <= coarse_block(len(new)) + 4 * LINE + 64
    assert (root / "current" / WEIGHTS).read_bytes() == new


def test_dry_run_shows_the_delta_and_changes_nothing(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    old = os.urandom(2 * MB)
    root = tmp_path / "dev"
    local_deploy(make_bundle(tmp_path / "b1", {"weights.bin": old}), root, registry)
    listing = sorted(str(p) for p in root.rglob("*"))
    bundle = make_bundle(tmp_path / "b2", {"weights.bin": flipped(old, 10)})
    plan = local_deploy(bundle, root, registry, dry_run=True)
    assert plan.files["delta"] == 1
    [change] = [c for c in plan.changes if c["action"] == "delta"]
    assert FINE_BLOCK < change["bytes_to_send"] < FINE_BLOCK + _hash_lists_bound(2 * MB, 256)
    assert sorted(str(p) for p in root.rglob("*")) == listing
    real = local_deploy(bundle, root, registry)
    assert real.bytes_sent == plan.bytes_to_send


class _CutMidDelta(LocalConnector):
    """The link goes after half a delta's ranges are written, the rest of the file garbage."""

    def write_ranges(
        self,
        local: Path,
        remote: str,
        size: int,
        ranges: Sequence[tuple[int, int]],
        on_bytes: ByteCallback,
    ) -> int:
        super().write_ranges(local, remote, size, ranges[: len(ranges) // 2], on_bytes)
        with Path(remote).open("r+b") as target:
            target.seek(ranges[-1][0])
            target.write(b"\0garbage")
        raise RemoteError(f"{self.label}: writing {remote}: connection lost (test)")


def test_a_delta_cut_short_is_finished_by_a_rerun(tmp_path: Path, registry: TargetRegistry) -> None:
    old = os.urandom(5 * MB)
    new = flipped(old, 100, MB + 100, 4 * MB + 100) + b"tail"
    root = tmp_path / "dev"
    first = local_deploy(make_bundle(tmp_path / "b1", {"weights.bin": old}), root, registry)
    bundle = make_bundle(tmp_path / "b2", {"weights.bin": new})
    with pytest.raises(RemoteError, match="connection lost"):
        local_deploy(bundle, root, registry, _CutMidDelta())
    partial = next((root / "releases").glob("*.partial")) / WEIGHTS
    assert partial.stat().st_size == len(new) and partial.read_bytes() != new
    again = local_deploy(bundle, root, registry)
    [change] = [c for c in again.changes if c["action"] == "delta"]
    assert change["base"] == str(partial)  # rebuilt in place, not copied again
    assert again.bytes_sent < 5 * FINE_BLOCK + _hash_lists_bound(len(new), 3 * 256) + 2000
    assert (root / "current" / WEIGHTS).read_bytes() == new
    assert (root / "releases" / first.release / WEIGHTS).read_bytes() == old


def test_a_hard_linked_partial_copy_is_not_edited_in_place(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    """A partial file linked to a complete release's (a link made earlier, then that release's
    copy changed) is rebuilt as a file of its own: the complete release keeps its bytes."""
    old = os.urandom(2 * MB)
    new = flipped(old, 999)
    root = tmp_path / "dev"
    first = local_deploy(make_bundle(tmp_path / "b1", {"weights.bin": old}), root, registry)
    bundle = make_bundle(tmp_path / "b2", {"weights.bin": new})
    partial = root / "releases" / f"{verify_bundle(bundle).short_id}.partial" / "engine"
    partial.mkdir(parents=True)
    released = root / "releases" / first.release / WEIGHTS
    os.link(released, partial / "weights.bin")
    report = local_deploy(bundle, root, registry)
    assert report.files["delta"] == 1
    assert released.read_bytes() == old
    assert (root / "current" / WEIGHTS).read_bytes() == new
