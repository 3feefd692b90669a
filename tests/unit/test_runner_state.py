"""Runner state (TensorRT-RTX's runtime cache) lives in a per-machine state directory, never in
the bundle or the release, which must keep verifying."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.backends.trtrtx.runner import ENGINE_FILE, RUNTIME_CACHE_FILE
from edgepack.bench.state import STATE_DIR_ENV, runner_state_file
from edgepack.bundle import verify_bundle
from tests.integration.conftest import make_bundle


def test_the_runtime_cache_goes_to_the_state_dir_keyed_by_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    first = make_bundle(tmp_path / "a", {ENGINE_FILE: b"engine one"})
    other = make_bundle(tmp_path / "b", {ENGINE_FILE: b"engine two"})
    path = runner_state_file("trtrtx", first / "engine" / ENGINE_FILE, RUNTIME_CACHE_FILE)
    path.write_bytes(b"jit kernels")
    assert path.is_relative_to(tmp_path / "state" / "trtrtx")
    assert not path.is_relative_to(first)
    verify_bundle(first)  # the bundle is still exactly what was sealed
    record = verify_bundle(first).file_record(f"engine/{ENGINE_FILE}")
    assert path.parent.name == record.sha256[:32]
    again = runner_state_file("trtrtx", first / "engine" / ENGINE_FILE, RUNTIME_CACHE_FILE)
    assert again == path  # the same engine finds its cache again
    assert runner_state_file("trtrtx", other / "engine" / ENGINE_FILE, RUNTIME_CACHE_FILE) != path
