"""The closed registry of backends. Importing it imports no heavy library."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.backends.base import Backend, EngineLoader, Requirement, Stage, StageContext
from edgepack.backends.edgellm import EDGELLM
from edgepack.backends.names import BACKEND_NAMES, BackendName
from edgepack.backends.ort import ORT
from edgepack.backends.trtllm import TRTLLM
from edgepack.backends.trtrtx import TRTRTX
from edgepack.errors import BundleError

if TYPE_CHECKING:
    from edgepack.bundle import Manifest

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (ORT, EDGELLM, TRTLLM, TRTRTX)}


def engine_loader_for(manifest: Manifest, engine_dir: Path) -> EngineLoader:
    """How the bench opens a bundle's engine here: its backend's runner, or its refusal."""
    name = str(manifest.recipe.get("backend"))
    backend = BACKENDS.get(name)
    if backend is None:
        raise BundleError(
            f"the bundle names an unknown backend {name!r}",
            hint=f"this edgepack knows {', '.join(BACKENDS)}",
        )
    return backend.engine_loader(engine_dir)


__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "Backend",
    "BackendName",
    "Requirement",
    "Stage",
    "StageContext",
    "engine_loader_for",
]
