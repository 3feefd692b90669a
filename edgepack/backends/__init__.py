"""The closed registry of backends. Importing it imports no heavy library, and a backend's own
modules are imported the first time it is looked up: a build for ort never loads TensorRT's."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.backends.base import Backend, EngineLoader, Requirement, Stage, StageContext
from edgepack.backends.names import BACKEND_NAMES, BackendName
from edgepack.errors import BundleError

if TYPE_CHECKING:
    from edgepack.bundle import Manifest


class _Registry(Mapping[str, Backend]):
    """``BACKEND_NAMES`` → the backend, each imported from ``edgepack.backends.<name>`` (its
    ``NAME.upper()`` attribute) when first asked for."""

    def __init__(self) -> None:
        self._loaded: dict[str, Backend] = {}

    def __getitem__(self, name: str) -> Backend:
        if name not in self._loaded:
            if name not in BACKEND_NAMES:
                raise KeyError(name)
            module = importlib.import_module(f"edgepack.backends.{name}")
            self._loaded[name] = getattr(module, name.upper())
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(BACKEND_NAMES)

    def __len__(self) -> int:
        return len(BACKEND_NAMES)


BACKENDS: Mapping[str, Backend] = _Registry()


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
