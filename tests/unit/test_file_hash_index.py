"""The file hash index: a file is re-read only when its size, mtime, ctime or inode moved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgepack import cache
from edgepack.bundle import verify_bundle
from edgepack.cache import FileHashIndex, sha256_file
from edgepack.errors import BundleError
from tests.integration.conftest import make_bundle
from tests.unit.file_edits import rewrite_keeping_size_and_mtime


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the index hashes (reads), in order."""
    seen: list[Path] = []

    def counting(path: Path, chunk_size: int = 1 << 20) -> str:
        seen.append(path)
        return sha256_file(path, chunk_size)

    monkeypatch.setattr(cache, "sha256_file", counting)
    return seen


def test_an_unchanged_file_is_read_once_across_processes(tmp_path: Path, reads: list[Path]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w" * 4096)
    index = FileHashIndex(tmp_path / "index.json")
    first = index.sha256(weights)
    assert index.sha256(weights) == first
    index.save()
    assert FileHashIndex(tmp_path / "index.json").sha256(weights) == first
    assert reads == [weights]


def test_a_rewrite_with_the_same_size_and_mtime_is_rehashed(
    tmp_path: Path, reads: list[Path]
) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    index = FileHashIndex(tmp_path / "index.json")
    old = index.sha256(weights)
    rewrite_keeping_size_and_mtime(weights, b"b" * 64)
    after = weights.stat()
    assert after.st_size == 64
    new = index.sha256(weights)
    assert new == sha256_file(weights) != old
    assert len(reads) == 2


def test_a_file_replaced_by_rename_is_rehashed(tmp_path: Path, reads: list[Path]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    index = FileHashIndex(tmp_path / "index.json")
    old = index.sha256(weights)
    stat = weights.stat()
    replacement = tmp_path / "new.tmp"
    replacement.write_bytes(b"c" * 64)
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(weights)
    assert weights.stat().st_ino != stat.st_ino
    assert index.sha256(weights) == sha256_file(weights) != old
    assert len(reads) == 2


def test_an_index_of_the_old_format_rehashes_once(tmp_path: Path, reads: list[Path]) -> None:
    """Entries written before ctime and inode were kept are not trusted."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    stat = weights.stat()
    old_entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": "0" * 64}
    (tmp_path / "index.json").write_text(f'{{"{os.path.realpath(weights)}": {old_entry}}}'
                                         .replace("'", '"'))  # fmt: skip
    index = FileHashIndex(tmp_path / "index.json")
    assert index.sha256(weights) == sha256_file(weights)
    assert index.sha256(weights) == sha256_file(weights)
    assert len(reads) == 1


def test_verify_bundle_with_an_index_reads_unchanged_files_once_and_catches_a_change(
    tmp_path: Path, reads: list[Path]
) -> None:
    bundle = make_bundle(tmp_path / "b", {"weights.bin": b"a" * 64, "cfg.json": b"{}"})
    reads.clear()  # making the bundle hashed its sources
    index = FileHashIndex(tmp_path / "index.json")
    verify_bundle(bundle, index)
    index.save()
    hashed = len(reads)
    assert hashed == 3  # the two engine files and prompts.json
    verify_bundle(bundle, FileHashIndex(tmp_path / "index.json"))
    assert len(reads) == hashed
    rewrite_keeping_size_and_mtime(bundle / "engine" / "weights.bin", b"b" * 64)
    with pytest.raises(BundleError, match=r"weights\.bin: sha256 differs"):
        verify_bundle(bundle, FileHashIndex(tmp_path / "index.json"))
