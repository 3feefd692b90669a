"""The closed registry of backends. Importing it imports no heavy library."""

from __future__ import annotations

from edgepack.backends.base import Backend, Requirement, Stage, StageContext
from edgepack.backends.names import BACKEND_NAMES, BackendName
from edgepack.backends.nvidia import EDGELLM, TRTLLM, TRTRTX
from edgepack.backends.ort import ORT

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (ORT, EDGELLM, TRTLLM, TRTRTX)}

__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "Backend",
    "BackendName",
    "Requirement",
    "Stage",
    "StageContext",
]
