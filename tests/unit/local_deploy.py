"""One deploy through the local connector (a directory standing in for a device)."""

from __future__ import annotations

from pathlib import Path

from edgepack.bundle import verify_bundle
from edgepack.remote.connector import LocalConnector
from edgepack.remote.sync import DeployOptions, DeployReport, SilentProgress, deploy
from edgepack.targets import TargetRegistry


def local_deploy(
    bundle: Path,
    root: Path,
    registry: TargetRegistry,
    device: LocalConnector | None = None,
    **options: object,
) -> DeployReport:
    """Deploy ``bundle`` (verified first) under ``root`` through ``device`` (a fresh local
    connector by default) with these ``DeployOptions``."""
    manifest = verify_bundle(bundle)
    settings = DeployOptions(root=str(root), **options)  # type: ignore[arg-type]
    with device or LocalConnector() as connector:
        return deploy(connector, bundle, manifest, settings, registry, SilentProgress())
