"""The data that ships inside the wheel: target profiles, model cards, templates, C++ sources.

Every reader goes through :func:`data_dir`. In a wheel the folders live in ``edgepack/_data/``
(hatch's force-include puts them there); in a source checkout or an editable install they are the
top-level folders of the repository. This module is the only place that knows both.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TARGETS_PATH_ENV = "EDGEPACK_TARGETS_PATH"
"""Extra directories of user target profiles, separated like PATH."""

PACKAGED_FOLDERS = ("targets", "models", "templates", "cpp_runtime", "prompts")


def data_dir(kind: str) -> Path:
    """Return the directory holding one kind of packaged data (``targets``, ``models``, ...)."""
    if kind not in PACKAGED_FOLDERS:
        raise ValueError(f"unknown data kind {kind!r}; known: {', '.join(PACKAGED_FOLDERS)}")
    package_root = Path(str(resources.files("edgepack")))
    installed = package_root / "_data" / kind
    if installed.is_dir():
        return installed
    return package_root.parent / kind
