"""Downloaded wheels are pinned by hash: a wheel that changed after its first download (upstream,
or here in a local --wheelhouse) is refused by pip --require-hashes, a cached one by the lock."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from edgepack.errors import ToolFailedError
from edgepack.wheel_lock import check_against_lock, lock_path, locked_download, read_lock


def _wheel(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tinypkg/__init__.py", body)
        archive.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\n"
                         "Version: 1.0\n")  # fmt: skip
        archive.writestr("tinypkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        archive.writestr("tinypkg-1.0.dist-info/RECORD", "")
    return wheel


def _pip(wheelhouse: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-index", "--find-links", str(wheelhouse), "--only-binary=:all:"]  # fmt: skip


def test_a_wheel_changed_after_its_first_download_is_refused(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    original = _wheel(wheelhouse, "VALUE = 1\n")
    lock = lock_path(tmp_path / "cache", "device-wheels", {"python": "3.12"})
    first = locked_download(_pip(wheelhouse), ["tinypkg==1.0"], tmp_path / "a", lock, print, "pip")
    assert [w.name for w in first] == [original.name]
    assert read_lock(lock) == {"tinypkg==1.0": {hashlib.sha256(original.read_bytes()).hexdigest()}}
    again = locked_download(_pip(wheelhouse), ["tinypkg==1.0"], tmp_path / "b", lock, print, "pip")
    assert again[0].read_bytes() == original.read_bytes()  # verified against the lock

    _wheel(wheelhouse, "VALUE = 2  # tampered\n")  # same name and version, other content
    with pytest.raises(ToolFailedError, match="differs from the one recorded") as refused:
        locked_download(_pip(wheelhouse), ["tinypkg==1.0"], tmp_path / "c", lock, print, "pip")
    assert str(lock) in refused.value.message
    assert not list((tmp_path / "c").glob("*.whl"))

    cached = _wheel(tmp_path / "cached", "VALUE = 3\n")
    with pytest.raises(ToolFailedError, match=r"differs from the tinypkg==1\.0 recorded"):
        check_against_lock([cached], lock)
    check_against_lock(first, lock)  # the genuine one passes
