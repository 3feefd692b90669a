"""A bundle already current at the destination is kept as it is; anything off: rewritten."""

from __future__ import annotations

from pathlib import Path

from edgepack.bundle import read_manifest, verify_bundle, write_bundle
from edgepack.cache import FileHashIndex
from tests.unit.file_edits import rewrite_keeping_size_and_mtime
from tests.unit.test_cache_bundle import _manifest, _sealed_bundle


def _rewrite(tmp_path: Path) -> Path:
    """Seal the same contents again into the bundle ``_sealed_bundle`` made."""
    contents = {"engine": tmp_path / "engine-src", "prompts.json": tmp_path / "prompts.json"}
    bundle = tmp_path / "bundle"
    write_bundle(bundle, _manifest(), contents, FileHashIndex(tmp_path / "index.json"))
    return bundle


def test_a_current_bundle_is_not_copied_again(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    before = {p: p.stat().st_ino for p in bundle.rglob("*")}
    created = read_manifest(bundle).created_at
    _rewrite(tmp_path)
    assert {p: p.stat().st_ino for p in bundle.rglob("*")} == before
    assert read_manifest(bundle).created_at == created


def test_a_tampered_file_makes_it_rewrite(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    engine = bundle / "engine" / "model.onnx"
    rewrite_keeping_size_and_mtime(engine, b"y" * 1000)  # only the ctime tells
    _rewrite(tmp_path)
    assert engine.read_bytes() == b"x" * 1000
    verify_bundle(bundle)


def test_an_extra_file_makes_it_rewrite(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    (bundle / "engine" / "stray.txt").write_text("left behind")
    _rewrite(tmp_path)
    assert not (bundle / "engine" / "stray.txt").exists()
    verify_bundle(bundle)


def test_changed_contents_give_a_new_bundle(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    old = read_manifest(bundle).bundle_id
    (tmp_path / "engine-src" / "model.onnx").write_bytes(b"z" * 1001)
    _rewrite(tmp_path)
    assert verify_bundle(bundle).bundle_id != old
