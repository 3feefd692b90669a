"""The deploy root's layout on the device::

releases/<short-id>/           complete, verified releases (never modified once renamed here)
releases/<short-id>.partial/   a release being uploaded; a rerun resumes it
releases/<short-id>~<token>/   a release repaired beside its broken copy (which then goes)
current  -> releases/<id>      switched by renaming a new symlink over it
previous -> releases/<id>      what `edgepack rollback` switches back to
history                        release names in the order they became current
.deploy-lock/                  one deploy at a time per root
.fingerprints/<release>        its files' sha256s by their stat (remote/fingerprints.py)
"""

from __future__ import annotations

import posixpath

from edgepack.bundle import path_problem
from edgepack.errors import BundleError

RELEASES = "releases"
CURRENT = "current"
PREVIOUS = "previous"
PARTIAL = ".partial"
LOCK = ".deploy-lock"
HISTORY = "history"
GENERATION = "~"
"""``<short-id>~<token>``: a repaired copy of a release, made beside the broken one."""


def under(directory: str, relative: str) -> str:
    """``directory/relative`` for a manifest-valid ``relative`` path; anything else is refused
    before it can name a place outside ``directory``."""
    problem = path_problem(relative)
    if problem:
        raise BundleError(f"refusing to write outside {directory}: {problem}")
    return posixpath.join(directory, relative)


def is_generation(name: str, release: str) -> bool:
    """Whether directory ``name`` holds release ``release`` (itself or a repaired copy)."""
    return name == release or name.startswith(release + GENERATION)
