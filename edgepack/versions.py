"""Installed distributions' versions, found once per process.

``importlib.metadata.version`` parses a distribution's whole METADATA as an e-mail message on
every call (about 2 ms each, 15 of them in a warm build); here the ``*.dist-info`` folders on
``sys.path`` are listed once and only the ``Version:`` line of the one asked for is read.
Anything else (an ``.egg-info``, a zipped path) goes to importlib.metadata.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sys
from pathlib import Path


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _dist_info_folders() -> dict[str, Path]:
    """Normalised distribution name → its first ``*.dist-info`` folder on ``sys.path``."""
    found: dict[str, Path] = {}
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as listing:
                names = [item.name for item in listing if item.name.endswith(".dist-info")]
        except OSError:
            continue
        for name in names:
            found.setdefault(_normal(name.partition("-")[0]), Path(entry or ".", name))
    return found


def _metadata_version(folder: Path) -> str | None:
    try:
        with (folder / "METADATA").open(encoding="utf-8") as metadata:
            for line in metadata:
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip()
                if not line.strip():
                    break  # the headers end at the first blank line
    except OSError:
        return None
    return None


@functools.cache
def distribution_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None where it is not installed."""
    folder = _dist_info_folders().get(_normal(distribution))
    version = _metadata_version(folder) if folder else None
    if version is not None:
        return version
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
