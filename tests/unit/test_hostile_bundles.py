"""Hostile bundles: paths that leave the release, symlinks and FIFOs are refused by `bundle verify`
and by `deploy --host local:DIR` before anything is written; the device side re-checks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepack.bundle import Manifest, path_problem, verify_bundle
from edgepack.errors import BundleError, ExitCode
from edgepack.remote.connector import LocalConnector
from edgepack.remote.sync import DeployOptions, SilentProgress, deploy
from edgepack.targets import TargetRegistry
from tests.integration.conftest import HOSTILE_KINDS, make_bundle, make_hostile_bundle
from tests.unit.conftest import CliResult


def _files(top: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for directory, _, names in os.walk(top):
        for name in names:
            path = Path(directory) / name
            found[str(path)] = path.read_bytes() if path.is_file() else None
    return found


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the deploying user's, beside the device root: nothing may read it into a
    release, overwrite it or remove it."""
    path = tmp_path / "x"
    path.write_bytes(b"the user's own file")
    return path


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_bundle_verify_refuses_a_hostile_bundle(
    kind: str, tmp_path: Path, victim: Path, cli: Callable[..., CliResult]
) -> None:
    bundle = make_hostile_bundle(tmp_path / "deep" / "er" / "bundle", kind, victim)
    result = cli("bundle", "verify", str(bundle))
    assert result.code == ExitCode.BUNDLE_INVALID, result.err
    reason = {"symlink": "symlink", "fifo": "regular file"}.get(kind, "unsafe path")
    assert reason in " ".join(result.err.split())
    with pytest.raises(BundleError):
        verify_bundle(bundle)


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_deploy_to_a_local_device_refuses_before_touching_it(
    kind: str, tmp_path: Path, victim: Path, cli: Callable[..., CliResult]
) -> None:
    bundle = make_hostile_bundle(tmp_path / "deep" / "er" / "bundle", kind, victim)
    before = _files(tmp_path)
    root = tmp_path / "device"
    result = cli("deploy", "--host", f"local:{root}", "--bundle", str(bundle))
    assert result.code == ExitCode.BUNDLE_INVALID, result.err
    assert not root.exists()
    assert _files(tmp_path) == before  # nothing written, truncated or removed anywhere
    assert victim.read_bytes() == b"the user's own file"


def test_deploy_refuses_a_manifest_that_skipped_the_model(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    """A library caller that built a Manifest without validation is still refused."""
    bundle = make_bundle(tmp_path / "b", {"model.onnx": b"m"})
    good = verify_bundle(bundle)
    record = good.files[0].model_copy(update={"path": "../../../etc/cron.d/x"})
    hostile = Manifest.model_construct(**{**dict(good), "files": [record]})
    with LocalConnector() as device, pytest.raises(BundleError, match="unsafe paths"):
        deploy(
            device, bundle, hostile, DeployOptions(root=str(tmp_path / "dev")), registry,
            SilentProgress(),
        )  # fmt: skip
    assert not (tmp_path / "dev").exists()


def test_the_device_side_removes_a_planted_symlink_before_writing(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    """A partial release on the device whose `engine` is a symlink to elsewhere: the upload goes
    into a real directory of the release, never through the link."""
    bundle = make_bundle(tmp_path / "b", {"model.onnx": b"m" * 1000})
    manifest = verify_bundle(bundle)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    partial = tmp_path / "dev" / "releases" / f"{manifest.short_id}.partial"
    partial.mkdir(parents=True)
    (partial / "engine").symlink_to(elsewhere)
    (partial / "prompts.json").symlink_to(tmp_path / "planted-target")
    with LocalConnector() as device:
        report = deploy(
            device, bundle, manifest, DeployOptions(root=str(tmp_path / "dev")), registry,
            SilentProgress(),
        )  # fmt: skip
    assert report.status == "deployed"
    assert list(elsewhere.iterdir()) == []
    assert not (tmp_path / "planted-target").exists()
    release = tmp_path / "dev" / "releases" / report.release
    assert not (release / "engine").is_symlink()
    verify_bundle(release)


@pytest.mark.parametrize(
    "path",
    ["", "/etc/x", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a\x00b", "a\nb", "a/./b"],
)
def test_unsafe_paths_have_a_problem(path: str) -> None:
    assert path_problem(path) is not None


@pytest.mark.parametrize("path", ["a", "engine/model.onnx", "a.b/c..d/...", "x y/z"])
def test_normal_paths_have_none(path: str) -> None:
    assert path_problem(path) is None
